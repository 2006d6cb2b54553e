"""What the notifier does with events: queue the customer's email, the team's alerts and the merchant's webhooks
(and remember what intake says of each payment's customer, for the emails of later events).

Every handler only writes rows, in the inbox transaction: a redelivered event queues nothing twice, and a
slow mail server or webhook endpoint never holds up consumption. The workers send.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from refundflow_notifier import account_emails, customer_contacts, merchant_settings, message_queue, webhook_store
from refundflow_notifier.customer_emails import EMAILED, customer_email
from refundflow_notifier.notification_rules import (
    ALERT_ONLY_EVENT_TYPES,
    MerchantPreferences,
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

# Events the notifier reads only for what they say of a payment's customer (the emails of later events use it).
CONTACT_ONLY_EVENT_TYPES = ("subscription.cancel_requested", "subscription.extension_granted")


async def notify(
    conn: asyncpg.Connection, settings: NotifierSettings, box: SecretBox | None, event: Event, data: EventData
) -> None:
    alerts = team_alerts(data)
    if event.type.value in WEBHOOK_EVENT_TYPES:
        cap = settings.webhook_max_endpoints_per_event
        _, subscribed = await webhook_store.queue_event(conn, event, cap)
        if subscribed > cap:  # intake allows no more: a bug, or an event that did not come from intake
            log.error("webhook_fanout_capped", merchant_id=data.merchant_id, cap=cap)
            alerts.append(too_many_endpoints_alert(cap))
    payment_id: str | None = getattr(data, "payment_id", None)
    remembered = await customer_contacts.remember(conn, data) if payment_id else None
    emailed_payment = payment_id if isinstance(data, EMAILED) else None  # whose customer may get an email
    if not alerts and emailed_payment is None:
        return  # nothing to send (payment.refunded, say): the merchant's settings need not be read
    contact: customer_contacts.Contact | None = None
    if remembered is None:
        prefs = await merchant_settings.preferences(conn, settings, data.merchant_id)
    else:  # the upsert read the merchant's settings too
        contact, prefs = remembered[0], merchant_settings.preferences_from(settings, remembered[1])
    if emailed_payment is not None:
        await _email_the_customer(conn, settings, box, prefs, event, data, emailed_payment, contact)
    for alert in alerts:
        await message_queue.queue_team_alert(
            conn,
            settings,
            prefs,
            event_id=_alert_event_id(event, alert.kind),
            merchant_id=data.merchant_id,
            alert=alert,
        )


async def _email_the_customer(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    box: SecretBox | None,
    prefs: MerchantPreferences,
    event: Event,
    data: EventData,
    payment_id: str,
    contact: customer_contacts.Contact | None,
) -> None:
    """Write the payment's customer the event's email, if it has one."""
    if contact is None:  # the event says nothing of the customer: what earlier ones said
        contact = await customer_contacts.recall(conn, data.merchant_id, payment_id)
    link = customer_contacts.link_for(contact, box, payment_id, datetime.now(UTC))
    email = customer_email(data, prefs, contact, link)
    if email is None:
        return
    await message_queue.queue_email(
        conn,
        settings,
        replace(prefs, sender_name=prefs.sender_name or email.content.context["merchant"]),
        event_id=event.id,
        merchant_id=data.merchant_id,
        recipient=email.recipient,
        content=email.content,
        refund_id=getattr(data, "refund_id", None),
    )


def _alert_event_id(event: Event, kind: str) -> uuid.UUID:
    """The event's own id; a fan-out alert's id is one per merchant and day, so the team hears it once a day."""
    if kind != "too_many_webhook_endpoints":
        return event.id
    day = datetime.now(UTC).date().isoformat()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"refundflow:{event.data.merchant_id}:{kind}:{day}")


def register(consumer: EventConsumer, settings: NotifierSettings) -> None:
    key = settings.webhook_secret_key
    box = SecretBox(key.get_secret_value()) if key else None
    for event_type in (*WEBHOOK_EVENT_TYPES, *ALERT_ONLY_EVENT_TYPES, *CONTACT_ONLY_EVENT_TYPES):
        consumer.handles(EVENT_DATA_TYPES[event_type])(_notifier_for(settings, box))

    @consumer.handles(WebhookEndpointConfigured)
    async def endpoint_configured(conn: asyncpg.Connection, event: Event, data: WebhookEndpointConfigured) -> None:
        await webhook_store.apply_endpoint(conn, data)

    @consumer.handles(NotificationSettingsConfigured)
    async def settings_configured(conn: asyncpg.Connection, event: Event, data: NotificationSettingsConfigured) -> None:
        await merchant_settings.save(conn, data)

    @consumer.handles(TeamMemberInvited)
    async def member_invited(conn: asyncpg.Connection, event: Event, data: TeamMemberInvited) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)

    @consumer.handles(PasswordResetRequested)
    async def reset_requested(conn: asyncpg.Connection, event: Event, data: PasswordResetRequested) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)


def _notifier_for(settings: NotifierSettings, box: SecretBox | None) -> Any:
    async def handle(conn: asyncpg.Connection, event: Event, data: EventData) -> None:
        await notify(conn, settings, box, event, data)

    return handle
