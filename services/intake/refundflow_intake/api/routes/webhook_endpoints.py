"""Merchant webhooks and team channels: endpoints, the delivery log, replays, notification settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from refundflow_intake import notification_settings
from refundflow_intake import webhook_endpoints as endpoints
from refundflow_intake.api.dependencies import CurrentCaller, Db, Now, Settings
from refundflow_intake.api.errors import ApiError, documented
from refundflow_intake.api.fields import IdempotencyKey, PathId
from refundflow_intake.api.links import id_links
from refundflow_intake.api.webhook_schemas import (
    DeliveryLog,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    EndpointSecretRolled,
    EndpointUpdate,
    NotificationSettings,
    NotificationSettingsOut,
    ReplayScheduled,
    ReplaySince,
    ReplayStarted,
)
from refundflow_intake.domain import IdempotencyKeyBlank, IdempotencyKeyReused, OutboundUrlNotAllowed
from refundflow_intake.notifier_client import (
    NotifierClient,
    NotifierLinkSettings,
    NotifierRefusedRequest,
    NotifierUnavailable,
)
from refundflow_intake.rate_limit import RateLimited
from refundflow_intake.webhook_endpoints import (
    ReplaySinceInFuture,
    ReplayWindowExceeded,
    TooManyWebhookEndpoints,
    WebhookDeliveryNotFound,
    WebhookEndpointExists,
    WebhookEndpointNotFound,
)
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.secret_box import SecretBox

router = APIRouter(tags=["webhooks"], route_class=RetriedRoute)

_SIGNING_UNAVAILABLE = "webhook_signing_unavailable"
_NOTIFIER_UNAVAILABLE = "notifier_unavailable"


def _out(row: dict[str, Any]) -> EndpointOut:
    return EndpointOut(**{k: v for k, v in row.items() if k in EndpointOut.model_fields}, events=row["event_types"])


async def optional_secret_box(settings: Settings) -> SecretBox | None:
    key = settings.webhook_secret_key
    return SecretBox(key.get_secret_value()) if key is not None else None


async def secret_box(box: Annotated[SecretBox | None, Depends(optional_secret_box)]) -> SecretBox:
    if box is None:
        raise ApiError(503, _SIGNING_UNAVAILABLE, "webhooks need WEBHOOK_SECRET_KEY set on intake and notifier")
    return box


async def notifier_client(
    request: Request, settings: Settings, box: Annotated[SecretBox, Depends(secret_box)]
) -> NotifierClient:
    link: NotifierLinkSettings = getattr(request.app.state, "notifier_link", None) or NotifierLinkSettings()
    return NotifierClient(link.notifier_url, settings.refundflow_internal_token, link.notifier_timeout_seconds)


Box = Annotated[SecretBox, Depends(secret_box)]
MaybeBox = Annotated[SecretBox | None, Depends(optional_secret_box)]
Notifier = Annotated[NotifierClient, Depends(notifier_client)]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # the notifier's bigint ids
_NEEDS_KEY = {503: [_SIGNING_UNAVAILABLE]}
_NEEDS_NOTIFIER = {503: [_SIGNING_UNAVAILABLE, _NOTIFIER_UNAVAILABLE]}
Replay = Callable[[], Awaitable[dict[str, Any]]]  # asks the notifier; answers what it scheduled or started


@router.post(
    "/v1/webhook-endpoints",
    status_code=201,
    responses=documented(
        OutboundUrlNotAllowed,
        TooManyWebhookEndpoints,
        WebhookEndpointExists,
        IdempotencyKeyReused,
        IdempotencyKeyBlank,
        WebhookEndpointNotFound,
        also=_NEEDS_KEY,
    )
    | {200: {"model": EndpointCreated, "description": "a retry (same Idempotency-Key and body): the first's endpoint"}}
    | id_links(
        201,
        "the new endpoint",
        "endpoint_id",
        "GET /v1/webhook-endpoints/{endpoint_id}",
        "PATCH /v1/webhook-endpoints/{endpoint_id}",
        "DELETE /v1/webhook-endpoints/{endpoint_id}",
        "GET /v1/webhook-endpoints/{endpoint_id}/deliveries",
        "POST /v1/webhook-endpoints/{endpoint_id}/replay",
        "POST /v1/webhook-endpoints/{endpoint_id}/secret",
    ),
)
async def create_endpoint(
    body: EndpointCreate,
    caller: CurrentCaller,
    db: Db,
    box: Box,
    settings: Settings,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> EndpointCreated:
    """A new endpoint for your systems, with its signing secret. The URL must be a public http(s) address; you may
    have a limited number of endpoints, and one enabled endpoint for a URL and set of events (another is 409
    ``endpoint_exists``, naming it).

    Send an ``Idempotency-Key`` to retry safely: the same key and body answer the first request's endpoint (200,
    ``Idempotent-Replayed: true``) with its secret while it is the endpoint's (null once rolled; 404 once the
    endpoint is deleted); the key with another body is 409 ``idempotency_key_reused``."""
    row, secret, replayed = await endpoints.add_endpoint_once(
        db.pool,
        box,
        caller.merchant_id,
        idempotency_key,
        body.model_dump(mode="json"),
        url=str(body.url),
        event_types=list(body.events),
        max_endpoints=settings.webhook_endpoints_per_merchant,
        allow_private=settings.refundflow_allow_private_webhook_urls,
    )
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/webhook-endpoints/{row['id']}"
    return EndpointCreated(**_out(row).model_dump(), secret=secret)


@router.get("/v1/webhook-endpoints", responses=documented())
async def list_endpoints(caller: CurrentCaller, db: Db) -> EndpointList:
    async with db.connection() as conn:
        rows = await endpoints.list_endpoints(conn, caller.merchant_id)
    return EndpointList(data=[_out(r) for r in rows])


@router.get("/v1/webhook-endpoints/{endpoint_id}", responses=documented(WebhookEndpointNotFound))
async def get_endpoint(endpoint_id: PathId, caller: CurrentCaller, db: Db) -> EndpointOut:
    async with db.connection() as conn:
        return _out(await endpoints.get_endpoint(conn, caller.merchant_id, endpoint_id))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    responses=documented(WebhookEndpointNotFound, OutboundUrlNotAllowed, WebhookEndpointExists),
)
async def update_endpoint(
    endpoint_id: PathId, body: EndpointUpdate, caller: CurrentCaller, db: Db, settings: Settings
) -> EndpointOut:
    """Change the url, the events or the enabled flag; the secret stays. As on creation, an enabled endpoint may not
    receive the same events at the same URL as another enabled one (409 ``endpoint_exists``, naming it)."""
    allow_private = settings.refundflow_allow_private_webhook_urls
    changes = {
        "url": await endpoints.checked_url(str(body.url), allow_private=allow_private) if body.url else None,
        "event_types": list(dict.fromkeys(body.events)) if body.events else None,
        "enabled": body.enabled,
    }
    async with db.transaction() as conn:
        return _out(await endpoints.update_endpoint(conn, caller.merchant_id, endpoint_id, changes))


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/secret", responses=documented(WebhookEndpointNotFound, also=_NEEDS_KEY)
)
async def roll_secret(
    endpoint_id: PathId, caller: CurrentCaller, db: Db, box: Box, settings: Settings
) -> EndpointSecretRolled:
    """Roll the endpoint's signing secret (e.g. after a leak): the new one is in this answer only. For an overlap
    (``WEBHOOK_SECRET_OVERLAP_HOURS``, 24 h, until ``previous_secret_expires_at``) each webhook carries two ``v1,``
    signatures in ``webhook-signature``, one made with the new secret and one with the previous one, so your
    receivers verify with either while you switch them; then the new one alone. Nothing still to be delivered is
    cancelled. Rolling again within the overlap ends the previous secret's."""
    row, secret = await endpoints.roll_secret(
        db.pool, box, caller.merchant_id, endpoint_id, overlap=timedelta(hours=settings.webhook_secret_overlap_hours)
    )
    return EndpointSecretRolled(**_out(row).model_dump(), secret=secret)


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204, responses=documented(WebhookEndpointNotFound))
async def delete_endpoint(endpoint_id: PathId, caller: CurrentCaller, db: Db) -> Response:
    async with db.transaction() as conn:
        await endpoints.delete_endpoint(conn, caller.merchant_id, endpoint_id)
    return Response(status_code=204)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    responses=documented(WebhookEndpointNotFound, also=_NEEDS_NOTIFIER),
)
async def delivery_log(
    endpoint_id: PathId,
    caller: CurrentCaller,
    db: Db,
    notifier: Notifier,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryLog:
    """The endpoint's delivery state and its latest deliveries, newest first, each attempt with its status code
    and latency."""
    async with db.transaction() as conn:
        await endpoints.get_endpoint(conn, caller.merchant_id, endpoint_id)
    log = await _ask(notifier.delivery_log(caller.merchant_id, endpoint_id, limit))
    return DeliveryLog.model_validate(log or {"endpoint": None, "deliveries": []})


async def _counted_replay(
    db: Db, settings: Settings, merchant_id: str, endpoint_id: str, now: datetime, replay: Replay
) -> dict[str, Any]:
    per_hour = settings.webhook_replays_per_hour
    return await endpoints.counted_replay(db.pool, merchant_id, endpoint_id, replay, per_hour=per_hour, now=now)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    responses=documented(
        WebhookEndpointNotFound, WebhookDeliveryNotFound, ReplayWindowExceeded, RateLimited, also=_NEEDS_NOTIFIER
    ),
)
async def replay_delivery(
    endpoint_id: PathId,
    delivery_id: DeliveryId,
    caller: CurrentCaller,
    db: Db,
    notifier: Notifier,
    settings: Settings,
    now: Now,
) -> ReplayScheduled:
    """Deliver that delivery's event again (same webhook-id, fresh signature), if it happened within the last
    30 days, as far back as a replay since a time reaches (422 ``replay_window_exceeded`` else). Replays are
    rate-limited."""

    async def replay() -> dict[str, Any]:
        return await replay_one(notifier, caller.merchant_id, endpoint_id, delivery_id)

    return ReplayScheduled(**await _counted_replay(db, settings, caller.merchant_id, endpoint_id, now, replay))


async def replay_one(notifier: NotifierClient, merchant_id: str, endpoint_id: str, delivery_id: int) -> dict[str, Any]:
    """Have the notifier deliver one delivery again; the API and the dashboard answer alike when it has none."""
    result = await _ask(notifier.replay(merchant_id, endpoint_id, delivery_id=delivery_id))
    if result is None:
        raise WebhookDeliveryNotFound(f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
    return result


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/replay",
    status_code=202,
    responses=documented(
        WebhookEndpointNotFound, ReplayWindowExceeded, ReplaySinceInFuture, RateLimited, also=_NEEDS_NOTIFIER
    ),
)
async def replay_since(
    endpoint_id: PathId,
    body: ReplaySince,
    caller: CurrentCaller,
    db: Db,
    notifier: Notifier,
    settings: Settings,
    now: Now,
) -> ReplayStarted:
    """Deliver again every event the endpoint subscribes to since a time (e.g. after an outage), at most
    ``WEBHOOK_REPLAY_MAX_DAYS`` (30) days back and not from a time still to come. Answered once the replay is
    started: the notifier queues the period's events in the background (live events still go first), and the
    delivery log shows them as they are queued. Asked again while it runs, it starts nothing more. Replays are
    rate-limited."""
    endpoints.check_replay_since(body.since, now=now, max_days=settings.webhook_replay_max_days)

    async def replay() -> dict[str, Any]:
        answer = await _ask(notifier.replay(caller.merchant_id, endpoint_id, since=body.since))
        return endpoints.replay_since_answer(answer)

    return ReplayStarted(**await _counted_replay(db, settings, caller.merchant_id, endpoint_id, now, replay))


async def _ask(call: Any) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] | None = await call
    except NotifierRefusedRequest as exc:  # what was asked, not an outage: trying again would not help
        if exc.code == ReplayWindowExceeded.code:  # a delivery's event older than a replay reaches
            raise ReplayWindowExceeded(str(exc)) from exc
        raise ApiError(422, "invalid_request", str(exc)) from exc
    except NotifierUnavailable as exc:
        raise ApiError(503, _NOTIFIER_UNAVAILABLE, str(exc)) from exc
    return result


def _settings_out(row: dict[str, Any], box: SecretBox | None, merchant_id: str) -> NotificationSettingsOut:
    return NotificationSettingsOut(
        **{name: row[name] for name in notification_settings.FIELDS},
        slack_webhook_url=notification_settings.masked_url(box, merchant_id, row["sealed_slack_webhook_url"]),
    )


@router.put("/v1/notification-settings", responses=documented(OutboundUrlNotAllowed, also=_NEEDS_KEY))
async def put_notification_settings(
    body: NotificationSettings, caller: CurrentCaller, db: Db, box: MaybeBox, settings: Settings
) -> NotificationSettingsOut:
    """Where team alerts go (a team email and/or a Slack-compatible webhook) and how customer emails present you.
    Replaces all settings: a field left out is cleared, except the Slack URL, which is stored sealed and never
    shown again: left out it stays, null clears it."""
    slack: str | object | None = notification_settings.KEEP
    if "slack_webhook_url" in body.model_fields_set:
        slack = str(body.slack_webhook_url) if body.slack_webhook_url is not None else None
    row = await configure_notifications(
        db,
        box,
        settings,
        caller.merchant_id,
        {name: getattr(body, name) for name in notification_settings.FIELDS},
        slack,
    )
    return _settings_out(row, box, caller.merchant_id)


async def configure_notifications(
    db: Db, box: SecretBox | None, settings: Settings, merchant_id: str, values: dict[str, Any], slack: object
) -> dict[str, Any]:
    """Save the settings (the API's and the dashboard's way alike): a new Slack URL must be one we may call, and
    is stored sealed, so it needs the key."""
    if isinstance(slack, str):
        if box is None:
            raise ApiError(503, _SIGNING_UNAVAILABLE, "a Slack URL is stored sealed: set WEBHOOK_SECRET_KEY")
        await endpoints.checked_url(slack, allow_private=settings.refundflow_allow_private_webhook_urls)
    async with db.transaction() as conn:
        return await notification_settings.save_settings(conn, box, merchant_id, values, slack)


@router.get("/v1/notification-settings", responses=documented())
async def get_notification_settings(caller: CurrentCaller, db: Db, box: MaybeBox) -> NotificationSettingsOut:
    async with db.connection() as conn:
        row = await notification_settings.get_settings(conn, caller.merchant_id)
    return _settings_out(row, box, caller.merchant_id)
