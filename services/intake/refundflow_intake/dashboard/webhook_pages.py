"""Webhooks: the merchant's endpoints (the signing secret shown once, on creation), each one's delivery log from
the notifier, and replays. The same use cases as ``/v1/webhook-endpoints``."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from refundflow_intake import webhook_endpoints as endpoints
from refundflow_intake.api.dependencies import Db, Now, Settings
from refundflow_intake.api.errors import ApiError, status_of
from refundflow_intake.api.fields import PathId
from refundflow_intake.api.routes.webhook_endpoints import DeliveryId, Notifier, optional_secret_box, replay_one
from refundflow_intake.api.webhook_schemas import DeliveryLog, EndpointCreate
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.pages import confirm_page, render, see_other
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import DomainError, OutboundUrlNotAllowed
from refundflow_intake.notifier_client import NotifierUnavailable
from refundflow_intake.roles import Permission, require
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.events import WEBHOOK_EVENT_TYPES
from refundflow_shared.secret_box import SecretBox

router = APIRouter(prefix="/dashboard/webhooks", include_in_schema=False, route_class=RetriedRoute)
MaybeBox = Annotated[SecretBox | None, Depends(optional_secret_box)]
# The single-use key of a form that makes a signing secret: see webhook_endpoints.roll_secret.
FormKey = Annotated[str, Form(max_length=100)]


def _new_form_key() -> str:
    return secrets.token_urlsafe(18)


async def _list_page(
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
        rows = await endpoints.list_endpoints(conn, user.merchant_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    return render(
        request,
        "webhooks.html",
        user,
        section="webhooks",
        endpoints=rows,
        event_types=WEBHOOK_EVENT_TYPES,
        error=error,
        error_field=error_field,
        status_code=status,
        pending_badge=pending,
        form_key=_new_form_key(),
        **{"created": None, "secret": None, "form": {}} | extra,
    )


@router.get("")
async def webhooks(request: Request, user: CurrentUser, db: Db) -> HTMLResponse:
    return await _list_page(request, db, user)


@router.post("")
async def add_endpoint(
    request: Request,
    user: FormUser,
    db: Db,
    settings: Settings,
    box: MaybeBox,
    url: Annotated[str, Form(max_length=2048)],
    events: Annotated[list[str], Form()],
    form_key: FormKey = "",
) -> HTMLResponse:
    """The secret is on this answer only: the page is rendered here, not redirected to. The same form sent again
    answers the endpoint it added, not another."""
    form = {"url": url, "events": events}
    try:
        require(user.role, Permission.MANAGE_WEBHOOKS)
        if box is None:
            raise ApiError(503, "webhook_signing_unavailable", "webhooks need WEBHOOK_SECRET_KEY set")
        try:
            body = EndpointCreate.model_validate({"url": url.strip(), "events": events})
        except ValidationError as exc:
            field: str | None
            if any(error["loc"][0] == "url" for error in exc.errors()):
                said, field = "Give an http(s) URL.", "url"
            else:
                said, field = "Choose at least one event.", None  # a group of boxes: said above the form
            return await _list_page(request, db, user, error=said, error_field=field, status=422, form=form)
        row, secret = await endpoints.add_endpoint(
            db.pool,
            box,
            user.merchant_id,
            url=str(body.url),
            event_types=list(body.events),
            max_endpoints=settings.webhook_endpoints_per_merchant,
            allow_private=settings.refundflow_allow_private_webhook_urls,
            form_key=form_key or None,
        )
    except (DomainError, ApiError) as exc:
        code = status_of(type(exc)) if isinstance(exc, DomainError) else exc.status
        field = "url" if exc.code == OutboundUrlNotAllowed.code else None
        return await _list_page(request, db, user, error=exc, error_field=field, status=code, form=form)
    return await _list_page(request, db, user, created=row, secret=secret)


@router.post("/{endpoint_id}/enabled")
async def set_enabled(
    request: Request,
    endpoint_id: PathId,
    user: FormUser,
    db: Db,
    notifier: Notifier,
    enabled: Annotated[bool, Form()],
) -> Response:
    """Enabling a second endpoint for the same URL and events is refused as the API refuses it, on the endpoint's
    page: the refusal is about the button, no field, so it is said at the top."""
    require(user.role, Permission.MANAGE_WEBHOOKS)
    try:
        async with db.transaction() as conn:
            await endpoints.update_endpoint(conn, user.merchant_id, endpoint_id, {"enabled": enabled})
    except endpoints.WebhookEndpointExists as exc:
        async with db.snapshot() as conn:
            endpoint = await endpoints.get_endpoint(conn, user.merchant_id, endpoint_id)
        return await _endpoint_page(request, user, db, notifier, endpoint, error=exc)
    return see_other(f"/dashboard/webhooks/{endpoint_id}?done=saved")


@router.get("/{endpoint_id}/delete")
async def confirm_delete(request: Request, endpoint_id: PathId, user: CurrentUser, db: Db) -> HTMLResponse:
    require(user.role, Permission.MANAGE_WEBHOOKS)
    async with db.snapshot() as conn:
        endpoint = await endpoints.get_endpoint(conn, user.merchant_id, endpoint_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    return confirm_page(
        request,
        user,
        section="webhooks",
        question=f"Delete the webhook endpoint {endpoint['url']}?",
        consequence=(
            "No more events are sent to it, retries included. To receive them there again, add it anew: it gets a new"
            " signing secret."
        ),
        verb="Delete endpoint",
        action=f"/dashboard/webhooks/{endpoint_id}/delete",
        back=f"/dashboard/webhooks/{endpoint_id}",
        pending_badge=pending,
    )


@router.post("/{endpoint_id}/delete")
async def delete(endpoint_id: PathId, user: FormUser, db: Db) -> Response:
    require(user.role, Permission.MANAGE_WEBHOOKS)
    async with db.transaction() as conn:
        await endpoints.delete_endpoint(conn, user.merchant_id, endpoint_id)
    return see_other("/dashboard/webhooks?done=removed")


@router.get("/{endpoint_id}")
async def endpoint_page(
    request: Request, endpoint_id: PathId, user: CurrentUser, db: Db, notifier: Notifier
) -> HTMLResponse:
    async with db.snapshot() as conn:
        endpoint = await endpoints.get_endpoint(conn, user.merchant_id, endpoint_id)
    return await _endpoint_page(request, user, db, notifier, endpoint)


@router.post("/{endpoint_id}/secret")
async def roll_secret(
    request: Request,
    endpoint_id: PathId,
    user: FormUser,
    db: Db,
    settings: Settings,
    box: MaybeBox,
    notifier: Notifier,
    form_key: FormKey = "",
) -> HTMLResponse:
    """The new secret is on this answer only: the page is rendered here, not redirected to. The same form sent
    again rolls nothing and shows the secret the first made."""
    require(user.role, Permission.MANAGE_WEBHOOKS)
    if box is None:
        raise ApiError(503, "webhook_signing_unavailable", "webhooks need WEBHOOK_SECRET_KEY set")
    overlap = timedelta(hours=settings.webhook_secret_overlap_hours)
    endpoint, secret = await endpoints.roll_secret(
        db.pool, box, user.merchant_id, endpoint_id, overlap=overlap, form_key=form_key or None
    )
    return await _endpoint_page(request, user, db, notifier, endpoint, secret=secret)


async def _endpoint_page(
    request: Request,
    user: SignedIn,
    db: Db,
    notifier: Notifier,
    endpoint: dict[str, Any],
    secret: str | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    async with db.snapshot() as conn:
        pending = await queries.pending_count(conn, user.merchant_id)
    try:
        log = await notifier.delivery_log(user.merchant_id, endpoint["id"], 50)
        unavailable = None
    except NotifierUnavailable as exc:
        log, unavailable = None, str(exc)
    return render(
        request,
        "webhook.html",
        user,
        section="webhooks",
        endpoint=endpoint,
        secret=secret,
        form_key=_new_form_key(),
        log=DeliveryLog.model_validate(log or {"endpoint": None, "deliveries": []}),
        unavailable=unavailable,
        pending_badge=pending,
        error=error,
        status_code=status_of(type(error)) if error else 200,
    )


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay")
async def replay(
    endpoint_id: PathId,
    delivery_id: DeliveryId,
    user: FormUser,
    db: Db,
    settings: Settings,
    notifier: Notifier,
    now: Now,
) -> Response:
    """Nothing is sent to a disabled endpoint: a replay of one (from a page opened before) schedules nothing, and
    takes none of the hour's replays; the notifier's answer says when it has it disabled."""
    require(user.role, Permission.MANAGE_WEBHOOKS)
    async with db.snapshot() as conn:
        endpoint = await endpoints.get_endpoint(conn, user.merchant_id, endpoint_id)
    if not endpoint["enabled"]:
        return see_other(f"/dashboard/webhooks/{endpoint_id}?done=not_replayed")
    per_hour = settings.webhook_replays_per_hour
    answer = await endpoints.counted_replay(
        db.pool,
        user.merchant_id,
        endpoint_id,
        lambda: replay_one(notifier, user.merchant_id, endpoint_id, delivery_id),
        per_hour=per_hour,
        now=now,
    )
    done = "replayed" if answer["scheduled"] else "not_replayed"
    return see_other(f"/dashboard/webhooks/{endpoint_id}?done={done}")
