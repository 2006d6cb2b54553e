"""Merchant webhooks and team channels: endpoints, the delivery log, replays, notification settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from refundflow_intake import merchant_notifications as notifications
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.errors import ApiError, ErrorBody, documented
from refundflow_intake.api.webhook_schemas import (
    DeliveryLog,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    NotificationSettings,
    ReplayScheduled,
    ReplaySince,
)
from refundflow_intake.merchant_notifications import WebhookDeliveryNotFound, WebhookEndpointNotFound
from refundflow_intake.notifier_client import NotifierClient, NotifierLinkSettings, NotifierUnavailable
from refundflow_shared.secret_box import SecretBox

router = APIRouter(tags=["webhooks"])


def _out(row: dict[str, Any]) -> EndpointOut:
    return EndpointOut(**{k: v for k, v in row.items() if k in EndpointOut.model_fields}, events=row["event_types"])


def secret_box(request: Request) -> SecretBox:
    key = request.app.state.settings.webhook_secret_key
    if key is None:
        raise ApiError(
            503, "webhook_signing_unavailable", "webhooks need WEBHOOK_SECRET_KEY set on intake and notifier"
        )
    return SecretBox(key.get_secret_value())


def notifier_client(request: Request, box: Annotated[SecretBox, Depends(secret_box)]) -> NotifierClient:
    link: NotifierLinkSettings = getattr(request.app.state, "notifier_link", None) or NotifierLinkSettings()
    token = request.app.state.settings.refundflow_internal_token
    return NotifierClient(link.notifier_url, token, link.notifier_timeout_seconds)


Box = Annotated[SecretBox, Depends(secret_box)]
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "error codes: `webhook_signing_unavailable`, `notifier_unavailable`"}
}
Notifier = Annotated[NotifierClient, Depends(notifier_client)]


@router.post("/v1/webhook-endpoints", status_code=201, responses=documented() | _UNAVAILABLE)
async def create_endpoint(body: EndpointCreate, caller: CurrentCaller, db: Db, box: Box) -> EndpointCreated:
    """A new endpoint for your systems; the signing secret is in this answer only."""
    secret = notifications.new_signing_secret()
    async with db.transaction() as conn:
        row = await notifications.create_endpoint(
            conn,
            box,
            caller.merchant_id,
            url=str(body.url),
            event_types=list(dict.fromkeys(body.events)),
            secret=secret,
        )
    return EndpointCreated(**_out(row).model_dump(), secret=secret)


@router.get("/v1/webhook-endpoints", responses=documented())
async def list_endpoints(caller: CurrentCaller, db: Db) -> EndpointList:
    async with db.transaction() as conn:
        rows = await notifications.list_endpoints(conn, caller.merchant_id)
    return EndpointList(data=[_out(r) for r in rows])


@router.get("/v1/webhook-endpoints/{endpoint_id}", responses=documented(WebhookEndpointNotFound))
async def get_endpoint(endpoint_id: str, caller: CurrentCaller, db: Db) -> EndpointOut:
    async with db.transaction() as conn:
        return _out(await notifications.get_endpoint(conn, caller.merchant_id, endpoint_id))


@router.patch("/v1/webhook-endpoints/{endpoint_id}", responses=documented(WebhookEndpointNotFound))
async def update_endpoint(endpoint_id: str, body: EndpointUpdate, caller: CurrentCaller, db: Db) -> EndpointOut:
    """Change the url, the events or the enabled flag; the secret stays."""
    changes = {
        "url": str(body.url) if body.url else None,
        "event_types": list(dict.fromkeys(body.events)) if body.events else None,
        "enabled": body.enabled,
    }
    async with db.transaction() as conn:
        return _out(await notifications.update_endpoint(conn, caller.merchant_id, endpoint_id, changes))


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204, responses=documented(WebhookEndpointNotFound))
async def delete_endpoint(endpoint_id: str, caller: CurrentCaller, db: Db) -> Response:
    async with db.transaction() as conn:
        await notifications.delete_endpoint(conn, caller.merchant_id, endpoint_id)
    return Response(status_code=204)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries", responses=documented(WebhookEndpointNotFound) | _UNAVAILABLE
)
async def delivery_log(
    endpoint_id: str, caller: CurrentCaller, db: Db, notifier: Notifier, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> DeliveryLog:
    """The endpoint's delivery state and its latest deliveries, newest first, each attempt with its status code
    and latency."""
    async with db.transaction() as conn:
        await notifications.get_endpoint(conn, caller.merchant_id, endpoint_id)
    log = await _ask(notifier.delivery_log(caller.merchant_id, endpoint_id, limit))
    return DeliveryLog.model_validate(log or {"endpoint": None, "deliveries": []})


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    responses=documented(WebhookEndpointNotFound, WebhookDeliveryNotFound) | _UNAVAILABLE,
)
async def replay_delivery(
    endpoint_id: str, delivery_id: int, caller: CurrentCaller, db: Db, notifier: Notifier
) -> ReplayScheduled:
    """Deliver that delivery's event again (same webhook-id, fresh signature)."""
    async with db.transaction() as conn:
        await notifications.get_endpoint(conn, caller.merchant_id, endpoint_id)
    result = await _ask(notifier.replay(caller.merchant_id, endpoint_id, delivery_id=delivery_id))
    if result is None:
        raise WebhookDeliveryNotFound(f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
    return ReplayScheduled(**result)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/replay",
    status_code=202,
    responses=documented(WebhookEndpointNotFound) | _UNAVAILABLE,
)
async def replay_since(
    endpoint_id: str, body: ReplaySince, caller: CurrentCaller, db: Db, notifier: Notifier
) -> ReplayScheduled:
    """Deliver again every event the endpoint subscribes to since a time (e.g. after an outage)."""
    async with db.transaction() as conn:
        await notifications.get_endpoint(conn, caller.merchant_id, endpoint_id)
    result = await _ask(notifier.replay(caller.merchant_id, endpoint_id, since=body.since))
    return ReplayScheduled(**(result or {"scheduled": 0}))


async def _ask(call: Any) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] | None = await call
    except NotifierUnavailable as exc:
        raise ApiError(503, "notifier_unavailable", str(exc)) from exc
    return result


@router.put("/v1/notification-settings", responses=documented())
async def put_notification_settings(body: NotificationSettings, caller: CurrentCaller, db: Db) -> NotificationSettings:
    """Where team alerts go (a team email and/or a Slack-compatible webhook) and how customer emails present you.
    Replaces all settings: a field left out is cleared."""
    values = {k: str(v) if v is not None else None for k, v in body.model_dump().items()}
    async with db.transaction() as conn:
        row = await notifications.save_settings(conn, caller.merchant_id, values)
    return NotificationSettings.model_validate({k: row[k] for k in NotificationSettings.model_fields})


@router.get("/v1/notification-settings", responses=documented())
async def get_notification_settings(caller: CurrentCaller, db: Db) -> NotificationSettings:
    async with db.transaction() as conn:
        row = await notifications.get_settings(conn, caller.merchant_id)
    return NotificationSettings.model_validate({k: row[k] for k in NotificationSettings.model_fields})
