"""Signing in and out, accepting an invite, and resetting a password: the pages a person sees before (or
instead of) the dashboard itself. Each rotates the session: a new id at every sign-in, never the browser's."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Annotated

from asyncpg import Connection
from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import TypeAdapter, ValidationError

from refundflow_intake import dashboard_sessions, rate_limit, team_members
from refundflow_intake.api.dependencies import Db, Links, Now, Settings
from refundflow_intake.api.fields import DisplayName
from refundflow_intake.dashboard import auth
from refundflow_intake.dashboard.auth import MaybeUser, PreSessionChecked
from refundflow_intake.dashboard.pages import render, see_other
from refundflow_intake.domain import DomainError
from refundflow_intake.one_time_links import LinkNotUsable, LinkPurpose, usable_link_owner
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=RetriedRoute)
Email = Annotated[str, Form(max_length=320)]
Password = Annotated[str, Form(max_length=1024)]
_WINDOW = timedelta(minutes=15)
# The API's rules for a person's name: it is printed in the invitations they send ("<name> invited you").
_DISPLAY_NAME = TypeAdapter(DisplayName)


# An account's attempts from all addresses together may be this many times its limit from one address: a backstop
# against guesses spread over many addresses, high enough that others' failures do not lock its owner out.
ALL_ADDRESSES_FACTOR = 10
# A reset is an email to the account's owner: from all addresses together, twice its limit from one, so many addresses
# cannot mail the owner without end, and one address cannot spend the owner's own.
RESETS_ALL_ADDRESSES_FACTOR = 2


async def _take_in_turn(db: Db, buckets: list[tuple[str, int]], *, window: timedelta, now: datetime) -> None:
    """Count the attempt in each (bucket, limit) in turn: one refused is counted in none after it, so a client over its
    own address's limit spends no account's budget, and over an account's limit from its address, not the account's
    budget from all addresses."""
    for bucket, limit in buckets:
        await rate_limit.take(db.pool, bucket, limit=limit, window=window, now=now)


async def _account_bucket(db: Db, email: str) -> str:
    """The account's throttle, keyed on the address as PostgreSQL lowercases it, as sign-in and reset find the
    account: Python's lowercase differs (İ is i and a combining dot, i in PostgreSQL), and each spelling of one
    account's address had a budget of its own."""
    lowered: str = await db.pool.fetchval("SELECT lower($1::text)", email.strip())
    # The address is hashed: the rate-limit table holds no email addresses.
    return "login:account:" + hashlib.sha256(lowered.encode()).hexdigest()[:32]


async def _account_from_client_bucket(db: Db, request: Request, email: str) -> str:
    """The account's throttle for one client address: what others spend elsewhere is not its owner's."""
    return f"{await _account_bucket(db, email)}:ip:{rate_limit.client_bucket(request)}"


async def _signed_in_response(db: Db, settings: Settings, user_id: str, *, now: datetime, to: str) -> Response:
    async with db.transaction() as conn:
        session_id = await _start_session(conn, settings, user_id, now=now)
    return _with_session(settings, session_id, to=to)


async def _start_session(conn: Connection, settings: Settings, user_id: str, *, now: datetime) -> str:
    return await dashboard_sessions.start(
        conn, user_id, now=now, lasts=timedelta(hours=settings.dashboard_session_hours)
    )


def _with_session(settings: Settings, session_id: str, *, to: str) -> Response:
    response = see_other(to)
    auth.set_session_cookie(response, settings, session_id)
    return response


async def _end_current_session(request: Request, db: Db) -> None:
    if old := request.cookies.get(auth.SESSION_COOKIE):
        async with db.transaction() as conn:
            await dashboard_sessions.end(conn, old)


@router.get("")  # /dashboard as /dashboard/: no trailing slash is added by a redirect
@router.get("/")
async def home(user: MaybeUser) -> Response:
    return see_other("/dashboard/payments" if user else "/dashboard/login")


@router.get("/login")
async def login_page(request: Request, settings: Settings, user: MaybeUser, next: str | None = None) -> Response:
    if user is not None:
        return see_other(auth.safe_next(next))
    response = Response()
    token = auth.pre_session(request, response, settings)
    page = render(request, "login.html", None, csrf_token=token, next=auth.safe_next(next), email="")
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page


@router.post("/login", dependencies=[PreSessionChecked])
async def login(
    request: Request, db: Db, settings: Settings, now: Now, email: Email, password: Password, next: str = Form("")
) -> Response:
    """Throttled per client address, then per account from that address, then per account from all addresses
    together (in PostgreSQL, so every replica counts the same)."""
    target = auth.safe_next(next)
    try:
        per_account = settings.login_attempts_per_account
        await _take_in_turn(
            db,
            [
                (f"login:ip:{rate_limit.client_bucket(request)}", settings.login_attempts_per_ip),
                (await _account_from_client_bucket(db, request, email), per_account),
                (await _account_bucket(db, email), per_account * ALL_ADDRESSES_FACTOR),
            ],
            window=_WINDOW,
            now=now,
        )
    except rate_limit.RateLimited as exc:
        return _login_again(request, settings, email, target, exc.message, 429, about_credentials=False)
    no_match = "That email and password do not match an account."
    verified = await team_members.authenticate(db.pool, email, password)  # no connection held while it hashes
    if verified is None:
        return _login_again(request, settings, email, target, no_match, 401)
    await _end_current_session(request, db)
    session_id = await _session_if_still_verified(db, settings, verified, password, now=now)
    if session_id is None:  # a reset or a removal came while it hashed
        return _login_again(request, settings, email, target, no_match, 401)
    return _with_session(settings, session_id, to=target)


# Rounds of checking the password again after the hash changed: a rehash changes it once (to the current
# parameters), so a few rounds are plenty; an account whose hash keeps changing is refused, as after a reset.
_RECHECKS = 3


async def _session_if_still_verified(
    db: Db, settings: Settings, verified: team_members.Verified, password: str, *, now: datetime
) -> str | None:
    """A session if the password checked is still the account's, or None. A hash that changed since is checked
    again, off the row's lock: another sign-in's rehash of the same password keeps it verified, a reset does not."""
    for _ in range(_RECHECKS):
        async with db.transaction() as conn:
            if await team_members.still_verified(conn, verified):
                return await _start_session(conn, settings, verified.member["id"], now=now)
        again = await team_members.reverified(db.pool, verified, password)
        if again is None:
            return None
        verified = again
    return None


def _login_again(
    request: Request,
    settings: Settings,
    email: str,
    target: str,
    message: str,
    status: int,
    *,
    about_credentials: bool = True,
) -> HTMLResponse:
    response = Response()
    token = auth.pre_session(request, response, settings)
    field = "credentials" if about_credentials else None  # said at the email and password fields
    page = render(
        request,
        "login.html",
        None,
        csrf_token=token,
        next=target,
        email=email,
        error=message,
        error_field=field,
        status_code=status,
    )
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page


@router.post("/logout")
async def logout(request: Request, db: Db, settings: Settings, user: auth.FormUser) -> Response:
    await _end_current_session(request, db)
    response = see_other("/dashboard/login?done=signed_out")
    auth.clear_session_cookie(response, settings)
    return response


@router.get("/invite/{token}")
async def invite_page(request: Request, token: str, db: Db, settings: Settings, now: Now) -> Response:
    return await _link_page(request, token, db, settings, now, LinkPurpose.INVITE)


@router.post("/invite/{token}", dependencies=[PreSessionChecked])
async def accept_invite(
    request: Request,
    token: str,
    db: Db,
    settings: Settings,
    now: Now,
    password: Password,
    password_again: Password,
    display_name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if password != password_again:
        return await _link_page(request, token, db, settings, now, LinkPurpose.INVITE, "The two passwords differ.")
    try:
        name = _DISPLAY_NAME.validate_python(display_name.strip()) if display_name.strip() else None
    except ValidationError:
        refused = "Your name must be one line, without <, >, @ or quotes."
        return await _link_page(request, token, db, settings, now, LinkPurpose.INVITE, refused)
    try:
        member = await team_members.accept_invite(db.pool, token, password=password, display_name=name, now=now)
    except DomainError as exc:
        return await _link_page(request, token, db, settings, now, LinkPurpose.INVITE, exc.message)
    await _end_current_session(request, db)
    return await _signed_in_response(db, settings, member["id"], now=now, to="/dashboard/payments?done=password_set")


@router.get("/forgot-password")
async def forgot_password_page(request: Request, settings: Settings) -> Response:
    response = Response()
    token = auth.pre_session(request, response, settings)
    page = render(request, "forgot_password.html", None, csrf_token=token)
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page


@router.post("/forgot-password", dependencies=[PreSessionChecked])
async def forgot_password(
    request: Request, db: Db, settings: Settings, links: Links, now: Now, email: Email
) -> Response:
    """The same answer whether or not the address has an account; throttled per address and client."""
    per_account = settings.password_resets_per_hour
    try:
        await _take_in_turn(
            db,
            [
                (f"reset:ip:{rate_limit.client_bucket(request)}", per_account * 4),
                ("reset:" + await _account_from_client_bucket(db, request, email), per_account),
                ("reset:" + await _account_bucket(db, email), per_account * RESETS_ALL_ADDRESSES_FACTOR),
            ],
            window=timedelta(hours=1),
            now=now,
        )
    except rate_limit.RateLimited:
        return see_other("/dashboard/login?done=reset_sent")  # say nothing more: no probing
    async with db.transaction() as conn:
        await team_members.request_password_reset(conn, links, email.strip(), now=now)
    return see_other("/dashboard/login?done=reset_sent")


@router.get("/reset-password/{token}")
async def reset_page(request: Request, token: str, db: Db, settings: Settings, now: Now) -> Response:
    return await _link_page(request, token, db, settings, now, LinkPurpose.PASSWORD_RESET)


@router.post("/reset-password/{token}", dependencies=[PreSessionChecked])
async def reset_password(
    request: Request,
    token: str,
    db: Db,
    settings: Settings,
    now: Now,
    password: Password,
    password_again: Password,
) -> Response:
    purpose = LinkPurpose.PASSWORD_RESET
    if password != password_again:
        return await _link_page(request, token, db, settings, now, purpose, "The two passwords differ.")
    try:
        member = await team_members.reset_password(db.pool, token, password=password, now=now)
    except DomainError as exc:
        return await _link_page(request, token, db, settings, now, purpose, exc.message)
    await _end_current_session(request, db)
    return await _signed_in_response(db, settings, member["id"], now=now, to="/dashboard/payments?done=password_set")


async def _link_page(
    request: Request,
    token: str,
    db: Db,
    settings: Settings,
    now: Now,
    purpose: LinkPurpose,
    error: str | None = None,
) -> Response:
    """The set-a-password page of a one-time link, or a 410 page when the link cannot be used."""
    async with db.transaction() as conn:
        try:
            user_id = await usable_link_owner(conn, token, purpose, now=now)
        except LinkNotUsable as exc:
            return render(request, "link_not_usable.html", None, message=exc.message, status_code=410)
        member = await team_members.get_any_member(conn, user_id)
    response = Response()
    csrf = auth.pre_session(request, response, settings)
    page = render(
        request,
        "set_password.html",
        None,
        csrf_token=csrf,
        invite=purpose is LinkPurpose.INVITE,
        email=member["email"],
        merchant_name=member["merchant_name"],
        error=error,
        status_code=422 if error else 200,
    )
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page
