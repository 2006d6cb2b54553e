"""Team: who can sign in, with which role; owners invite (the link is emailed and shown once), change roles
and remove people."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from refundflow_intake import actors, rate_limit, team_members
from refundflow_intake.api.dependencies import Db, Links, Now, Settings
from refundflow_intake.api.errors import ApiError, status_of
from refundflow_intake.api.fields import ACCOUNT_EMAIL_RULE, AccountEmail, PathId
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.pages import confirm_page, render, see_other
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import DomainError
from refundflow_intake.roles import Permission, Role, require
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard/team", include_in_schema=False, route_class=RetriedRoute)
_EMAIL = TypeAdapter(AccountEmail)


async def _page(
    request: Request,
    db: Db,
    user: SignedIn,
    *,
    error: str | DomainError | ApiError | None = None,
    error_field: str | None = None,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    async with db.snapshot() as conn:
        members = await team_members.list_members(conn, user.merchant_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    return render(
        request,
        "team.html",
        user,
        section="team",
        members=members,
        roles=[r.value for r in Role],
        invitation_days=team_members.INVITATION_LIFE.days,
        error=error,
        error_field=error_field,
        status_code=status,
        pending_badge=pending,
        **{"invite_url": None, "invited": None, "resent": None, "typed_email": ""} | extra,
    )


async def _count_invite_email(db: Db, settings: Settings, merchant_id: str, now: datetime) -> None:
    """Invites and resends each email, in Refundflow's name, an address an owner typed: a few an hour per merchant,
    so a hostile owner cannot mail anyone at will (RateLimited beyond)."""
    limit, hour = settings.team_invites_per_hour, timedelta(hours=1)
    await rate_limit.take(db.pool, f"team_invites:{merchant_id}", limit=limit, window=hour, now=now)


@router.get("")
async def team(request: Request, user: CurrentUser, db: Db) -> HTMLResponse:
    return await _page(request, db, user)


@router.post("/invite")
async def invite(
    request: Request,
    user: FormUser,
    db: Db,
    links: Links,
    settings: Settings,
    now: Now,
    email: Annotated[str, Form(max_length=320)],
    role: Annotated[Role, Form()],
) -> HTMLResponse:
    """The invite link is on this answer only (and in the email the notifier sends)."""
    try:
        require(user.role, Permission.MANAGE_TEAM)
        address = _EMAIL.validate_python(email.strip())
        await _count_invite_email(db, settings, user.merchant_id, now)
        async with db.transaction() as conn:
            member, url = await team_members.invite(
                conn, links, user.merchant_id, email=address, role=role, invited_by=actors.person(user.user_id), now=now
            )
    except ValidationError:
        said = "That is not an email address."
        if not email.isascii():
            said = f"That address is refused: {ACCOUNT_EMAIL_RULE}."
        return await _page(request, db, user, error=said, error_field="invite-email", typed_email=email, status=422)
    except DomainError as exc:
        field = "invite-email" if isinstance(exc, team_members.EmailAlreadyRegistered) else None
        return await _page(
            request, db, user, error=exc, error_field=field, typed_email=email, status=status_of(type(exc))
        )
    return await _page(request, db, user, invite_url=url, invited=member)


@router.post("/{member_id}/resend")
async def resend(
    request: Request, member_id: PathId, user: FormUser, db: Db, links: Links, settings: Settings, now: Now
) -> HTMLResponse:
    try:
        require(user.role, Permission.MANAGE_TEAM)
        await _count_invite_email(db, settings, user.merchant_id, now)
        async with db.transaction() as conn:
            sent = await team_members.resend_invite(
                conn, links, user.merchant_id, member_id, by=actors.person(user.user_id), now=now
            )
            member = await team_members.get_member(conn, user.merchant_id, member_id)
    except DomainError as exc:
        return await _page(request, db, user, error=exc, status=status_of(type(exc)))
    return await _page(request, db, user, invite_url=sent.url, invited=member, resent=sent)


@router.post("/{member_id}/role")
async def change_role(
    request: Request, member_id: PathId, user: FormUser, db: Db, now: Now, role: Annotated[Role, Form()]
) -> Response:
    try:
        require(user.role, Permission.MANAGE_TEAM)
        async with db.transaction() as conn:
            await team_members.change_role(conn, user.merchant_id, member_id, role, now=now)
    except DomainError as exc:
        return await _page(request, db, user, error=exc, status=status_of(type(exc)))
    return see_other("/dashboard/team?done=role_changed")


@router.get("/{member_id}/remove")
async def confirm_remove(request: Request, member_id: PathId, user: CurrentUser, db: Db) -> HTMLResponse:
    require(user.role, Permission.MANAGE_TEAM)
    async with db.snapshot() as conn:
        member = await team_members.get_member(conn, user.merchant_id, member_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    return confirm_page(
        request,
        user,
        section="team",
        question=f"Remove {member['email']} from {user.merchant_name}?",
        consequence=(
            "They are signed out at once and can no longer open this dashboard; what they did stays in the timelines."
            " To let them back, invite them again."
        ),
        verb="Remove",
        action=f"/dashboard/team/{member_id}/remove",
        back="/dashboard/team",
        pending_badge=pending,
    )


@router.post("/{member_id}/remove")
async def remove(request: Request, member_id: PathId, user: FormUser, db: Db, now: Now) -> Response:
    try:
        require(user.role, Permission.MANAGE_TEAM)
        async with db.transaction() as conn:
            await team_members.remove(conn, user.merchant_id, member_id, now=now)
    except DomainError as exc:
        return await _page(request, db, user, error=exc, status=status_of(type(exc)))
    return see_other("/dashboard/team?done=removed")
