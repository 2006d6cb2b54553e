"""What the notifier does with events: queue the customer's email, the team's alerts and the merchant's webhooks.

Every handler only writes rows, in the inbox transaction: a redelivered event queues nothing twice, and a
slow mail server or webhook endpoint never holds up consumption. The workers send.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from refundflow_notifier import account_emails, merchant_settings, message_queue, webhook_store
from refundflow_notifier.notification_rules import (
    ALERT_ONLY_EVENT_TYPES,
    customer_email,
    team_alerts,
    too_many_endpoints_alert,
)
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    WEBHOOK_EVENT_TYPES,
    Event,
    EventData,
    NotificationSettingsConfigured,
    PasswordResetRequested,
    TeamMemberInvited,
    WebhookEndpointConfigured,
)
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)


async def notify(conn: asyncpg.Connection, settings: NotifierSettings, event: Event, data: EventData) -> None:
    prefs = await merchant_settings.preferences(conn, settings, data.merchant_id)
    content = customer_email(data, prefs)
    if content is not None:
        await message_queue.queue_email(
            conn,
            settings,
            prefs,
            event_id=event.id,
            merchant_id=data.merchant_id,
            recipient=getattr(data, "customer_email", ""),
            content=content,
            refund_id=getattr(data, "refund_id", None),
        )
    alerts = team_alerts(data)
    if event.type.value in WEBHOOK_EVENT_TYPES:
        cap = settings.webhook_max_endpoints_per_event
        _, subscribed = await webhook_store.queue_event(conn, event, cap)
        if subscribed > cap:  # intake allows no more: a bug, or an event that did not come from intake
            log.error("webhook_fanout_capped", merchant_id=data.merchant_id, cap=cap)
            alerts.append(too_many_endpoints_alert(cap))
    for alert in alerts:
        await message_queue.queue_team_alert(
            conn,
            settings,
            prefs,
            event_id=_alert_event_id(event, alert.kind),
            merchant_id=data.merchant_id,
            alert=alert,
        )


def _alert_event_id(event: Event, kind: str) -> uuid.UUID:
    """The event's own id; a fan-out alert's id is one per merchant and day, so the team hears it once a day."""
    if kind != "too_many_webhook_endpoints":
        return event.id
    day = datetime.now(UTC).date().isoformat()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"refundflow:{event.data.merchant_id}:{kind}:{day}")


def register(consumer: EventConsumer, settings: NotifierSettings) -> None:
    for event_type in (*WEBHOOK_EVENT_TYPES, *ALERT_ONLY_EVENT_TYPES):
        consumer.handles(EVENT_DATA_TYPES[event_type])(_notifier_for(settings))

    @consumer.handles(WebhookEndpointConfigured)
    async def endpoint_configured(conn: asyncpg.Connection, event: Event, data: WebhookEndpointConfigured) -> None:
        await webhook_store.apply_endpoint(conn, data)

    @consumer.handles(NotificationSettingsConfigured)
    async def settings_configured(conn: asyncpg.Connection, event: Event, data: NotificationSettingsConfigured) -> None:
        await merchant_settings.save(conn, data)

    key = settings.webhook_secret_key
    box = SecretBox(key.get_secret_value()) if key else None

    @consumer.handles(TeamMemberInvited)
    async def member_invited(conn: asyncpg.Connection, event: Event, data: TeamMemberInvited) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)

    @consumer.handles(PasswordResetRequested)
    async def reset_requested(conn: asyncpg.Connection, event: Event, data: PasswordResetRequested) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)


def _notifier_for(settings: NotifierSettings) -> Any:
    async def handle(conn: asyncpg.Connection, event: Event, data: EventData) -> None:
        await notify(conn, settings, event, data)

    return handle
