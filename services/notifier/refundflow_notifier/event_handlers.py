"""What the notifier does with events: queue the customer's email, the team's alerts and the merchant's webhooks.

Every handler only writes rows, in the inbox transaction: a redelivered event queues nothing twice, and a
slow mail server or webhook endpoint never holds up consumption. The workers send.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.notification_rules import (
    ALERT_ONLY_EVENT_TYPES,
    customer_email,
    team_alerts,
)
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    WEBHOOK_EVENT_TYPES,
    Event,
    EventData,
    NotificationSettingsConfigured,
    RefundFailed,
    RefundSucceeded,
    WebhookEndpointConfigured,
)


async def notify(conn: asyncpg.Connection, settings: NotifierSettings, event: Event, data: EventData) -> None:
    prefs = await message_queue.merchant_preferences(conn, settings, data.merchant_id)
    previous = await _record_outcome(conn, data)
    refund_id = getattr(data, "refund_id", None)
    content = customer_email(data, prefs, previous)
    if content is not None:
        await message_queue.queue_email(
            conn,
            settings,
            prefs,
            event_id=event.id,
            merchant_id=data.merchant_id,
            recipient=getattr(data, "customer_email", ""),
            content=content,
            refund_id=refund_id,
        )
    for alert in team_alerts(data):
        await message_queue.queue_team_alert(
            conn, settings, prefs, event_id=event.id, merchant_id=data.merchant_id, alert=alert
        )
    if event.type.value in WEBHOOK_EVENT_TYPES:
        await webhook_store.queue_event(conn, event)


async def _record_outcome(conn: asyncpg.Connection, data: EventData) -> str | None:
    """The refund's earlier outcome, if any, then remember this one (to notice a reversal)."""
    if not isinstance(data, RefundSucceeded | RefundFailed):
        return None
    outcome = "succeeded" if isinstance(data, RefundSucceeded) else "failed"
    previous: str | None = await conn.fetchval(
        "SELECT outcome FROM refund_outcomes WHERE refund_id = $1 FOR UPDATE", data.refund_id
    )
    await conn.execute(
        "INSERT INTO refund_outcomes (refund_id, outcome) VALUES ($1, $2)"
        " ON CONFLICT (refund_id) DO UPDATE SET outcome = EXCLUDED.outcome",
        data.refund_id,
        outcome,
    )
    return previous


async def save_settings(conn: asyncpg.Connection, data: NotificationSettingsConfigured) -> None:
    await conn.execute(
        "INSERT INTO merchant_settings (merchant_id, team_email, slack_webhook_url, sender_name, reply_to,"
        " review_target, refund_process_time) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (merchant_id) DO UPDATE SET team_email = EXCLUDED.team_email,"
        " slack_webhook_url = EXCLUDED.slack_webhook_url, sender_name = EXCLUDED.sender_name,"
        " reply_to = EXCLUDED.reply_to, review_target = EXCLUDED.review_target,"
        " refund_process_time = EXCLUDED.refund_process_time, updated_at = now()",
        data.merchant_id,
        data.team_email,
        data.slack_webhook_url,
        data.sender_name,
        data.reply_to,
        data.review_target,
        data.refund_process_time,
    )


def register(consumer: EventConsumer, settings: NotifierSettings) -> None:
    for event_type in (*WEBHOOK_EVENT_TYPES, *ALERT_ONLY_EVENT_TYPES):
        consumer.handles(EVENT_DATA_TYPES[event_type])(_notifier_for(settings))

    @consumer.handles(WebhookEndpointConfigured)
    async def endpoint_configured(conn: asyncpg.Connection, event: Event, data: WebhookEndpointConfigured) -> None:
        await webhook_store.apply_endpoint(conn, data)

    @consumer.handles(NotificationSettingsConfigured)
    async def settings_configured(conn: asyncpg.Connection, event: Event, data: NotificationSettingsConfigured) -> None:
        await save_settings(conn, data)


def _notifier_for(settings: NotifierSettings) -> Any:
    async def handle(conn: asyncpg.Connection, event: Event, data: EventData) -> None:
        await notify(conn, settings, event, data)

    return handle
