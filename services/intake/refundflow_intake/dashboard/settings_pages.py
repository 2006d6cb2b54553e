"""Settings: where team alerts go and how customer emails present the merchant, the customer portal (its switch,
and the refund policy to embed on the merchant's own pages), and the API keys machines use (created and revoked
by owners here; each key is shown once)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from refundflow_intake import merchant_accounts, notification_settings
from refundflow_intake.api.dependencies import Db, Settings
from refundflow_intake.api.errors import ApiError, status_of
from refundflow_intake.api.fields import Line, PathId
from refundflow_intake.api.routes.webhook_endpoints import configure_notifications, optional_secret_box
from refundflow_intake.api.webhook_schemas import NotificationSettings
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.email_preview_pages import email_previews
from refundflow_intake.dashboard.pages import confirm_page, render, see_other
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import ApiKeyNotFound, DomainError, OutboundUrlNotAllowed, TooManyApiKeys
from refundflow_intake.portal import customer_requests, policy_pages
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.roles import Permission, require
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.secret_box import SecretBox

router = APIRouter(prefix="/dashboard/settings", include_in_schema=False, route_class=RetriedRoute)
MaybeBox = Annotated[SecretBox | None, Depends(optional_secret_box)]
Text = Annotated[str, Form(max_length=2048)]
_KEY_NAME = TypeAdapter(Line)  # as POST /v1/api-keys takes it


async def _page(
    request: Request,
    db: Db,
    user: SignedIn,
    box: SecretBox | None,
    settings: Settings,
    *,
    error: str | DomainError | ApiError | None = None,
    error_field: str | None = None,
    typed: dict[str, str] | None = None,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """``typed``: the notification form as it was sent, shown instead of the saved values when it was refused."""
    async with db.snapshot() as conn:
        saved = await notification_settings.get_settings(conn, user.merchant_id) | (typed or {})
        keys = await merchant_accounts.list_api_keys(conn, user.merchant_id)
        pending = await queries.pending_count(conn, user.merchant_id)
        portal_on = await customer_requests.portal_enabled(conn, user.merchant_id)
    # Asked on every answer, a form's too: an empty list says the notifier did not answer, which is then true.
    previews = await email_previews(request, db, settings, user)
    slack = notification_settings.masked_url(box, user.merchant_id, saved.get("sealed_slack_webhook_url"))
    links: CustomerLinks = request.app.state.customer_links
    policy_path = f"{policy_pages.PREFIX}/{user.merchant_id}"
    return render(
        request,
        "settings.html",
        user,
        section="settings",
        saved=saved,
        slack=slack,
        keys=keys,
        portal_on=portal_on,
        previews=previews,
        policy_url=links.public_url + policy_path,
        embed_path=f"{policy_path}/embed",
        snippet=policy_pages.embed_snippet(links.public_url, user.merchant_id, user.merchant_name),
        error=error,
        error_field=error_field,
        status_code=status,
        pending_badge=pending,
        form_key=secrets.token_urlsafe(18),
        **{"new_key": None, "key_made_before": None} | extra,
    )


@router.get("")
async def settings_page(request: Request, user: CurrentUser, db: Db, box: MaybeBox, settings: Settings) -> HTMLResponse:
    return await _page(request, db, user, box, settings)


@router.post("/notifications")
async def save_notifications(
    request: Request,
    user: FormUser,
    db: Db,
    box: MaybeBox,
    settings: Settings,
    team_email: Text = "",
    sender_name: Text = "",
    reply_to: Text = "",
    review_target: Text = "",
    slack_webhook_url: Text = "",
    clear_slack: bool = Form(False),
) -> Response:
    """A Slack URL left empty keeps the saved one (it is never shown again); "remove" clears it."""
    typed = {
        "team_email": team_email,
        "sender_name": sender_name,
        "reply_to": reply_to,
        "review_target": review_target,
    }
    try:
        require(user.role, Permission.MANAGE_SETTINGS)
        body = NotificationSettings.model_validate({k: v.strip() or None for k, v in typed.items()})
        slack: object = None if clear_slack else (slack_webhook_url.strip() or notification_settings.KEEP)
        if isinstance(slack, str):
            NotificationSettings.model_validate({"slack_webhook_url": slack})
        values = {name: getattr(body, name) for name in notification_settings.FIELDS}
        await configure_notifications(db, box, settings, user.merchant_id, values, slack)
    except ValidationError as exc:
        where = str(exc.errors()[0]["loc"][0])  # the form's field of that name, its input's id too
        said = f"Check the {where.replace('_', ' ')}: it is not valid."
        return await _page(request, db, user, box, settings, error=said, error_field=where, typed=typed, status=422)
    except (DomainError, ApiError) as exc:
        code = status_of(type(exc)) if isinstance(exc, DomainError) else exc.status
        field = "slack_webhook_url" if exc.code == OutboundUrlNotAllowed.code else None
        return await _page(request, db, user, box, settings, error=exc, error_field=field, typed=typed, status=code)
    return see_other("/dashboard/settings?done=saved")


@router.post("/portal")
async def save_portal(
    request: Request,
    user: FormUser,
    db: Db,
    box: MaybeBox,
    settings: Settings,
    enabled: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Switched off, customers' links and requests answer a page saying so, and emails carry no link."""
    try:
        require(user.role, Permission.MANAGE_SETTINGS)
    except DomainError as exc:
        return await _page(request, db, user, box, settings, error=exc, status=status_of(type(exc)))
    async with db.transaction() as conn:
        await customer_requests.set_portal_enabled(conn, user.merchant_id, enabled == "true")
    return see_other("/dashboard/settings?done=saved#portal-heading")


@router.post("/api-keys")
async def create_key(
    request: Request,
    user: FormUser,
    db: Db,
    box: MaybeBox,
    settings: Settings,
    name: Annotated[str, Form(max_length=200)] = "",
    form_key: Annotated[str, Form(max_length=100)] = "",
) -> HTMLResponse:
    """The key is on this answer only. The same form sent again (a double click, a reload) creates no other key: its
    answer names the key the first made, whose plaintext nobody can show again."""
    require(user.role, Permission.MANAGE_API_KEYS)
    try:
        key_name = _KEY_NAME.validate_python(name.strip()) or None
    except ValidationError:
        return await _page(request, db, user, box, settings, error="A key's name must be one line of text.", status=422)
    try:
        async with db.transaction() as conn:
            await merchant_accounts.lock_merchant(conn, user.merchant_id)  # the same form sent at once waits here
            earlier = await merchant_accounts.api_key_made_by(conn, user.merchant_id, form_key) if form_key else None
            if earlier is None:
                key = await merchant_accounts.create_api_key(
                    conn,
                    user.merchant_id,
                    name=key_name,
                    max_live=settings.api_keys_per_merchant,
                    form_key=form_key or None,
                )
    except TooManyApiKeys as exc:
        return await _page(request, db, user, box, settings, error=exc, status=status_of(type(exc)))
    if earlier is not None:
        return await _page(request, db, user, box, settings, key_made_before=earlier)
    return await _page(request, db, user, box, settings, new_key=key)


@router.get("/api-keys/{key_id}/revoke")
async def confirm_revoke(request: Request, key_id: PathId, user: CurrentUser, db: Db) -> HTMLResponse:
    require(user.role, Permission.MANAGE_API_KEYS)
    async with db.snapshot() as conn:
        keys = await merchant_accounts.list_api_keys(conn, user.merchant_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    key = next((k for k in keys if k["id"] == key_id), None)
    if key is None:
        raise ApiKeyNotFound(f"no API key {key_id}")
    return confirm_page(
        request,
        user,
        section="settings",
        question=f"Revoke the API key “{key['name'] or key_id}”?",
        consequence=(
            "Every call made with it is refused from then on, and a revoked key cannot be brought back: if something"
            " still uses it, create a new key and put it there first."
        ),
        verb="Revoke key",
        action=f"/dashboard/settings/api-keys/{key_id}/revoke",
        back="/dashboard/settings",
        pending_badge=pending,
    )


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: PathId, user: FormUser, db: Db, box: MaybeBox, settings: Settings
) -> Response:
    try:
        require(user.role, Permission.MANAGE_API_KEYS)
        async with db.transaction() as conn:
            await merchant_accounts.revoke_api_key(conn, user.merchant_id, key_id)
    except DomainError as exc:
        return await _page(request, db, user, box, settings, error=exc, status=status_of(type(exc)))
    return see_other("/dashboard/settings?done=removed")
