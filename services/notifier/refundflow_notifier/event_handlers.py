"""What the notifier does with events: queue the customer's email, the team's alerts and the merchant's webhooks
(and remember what intake says of each payment's customer, for the emails of later events).

Every handler only writes rows, in the inbox transaction: a redelivered event queues nothing twice, and a
slow mail server or webhook endpoint never holds up consumption. The workers send. What a batch's events say of
their customers is remembered together before they are handled (``remember_first_of_each_payment``, the consumer's
``prepare``), and their webhooks and messages are queued together after (``queue_notifications``, its ``finish``).
An alert the merchant's settings route nowhere waits for settings that may still come (``held_team_alerts``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg
import structlog

from refundflow_notifier import (
    account_emails,
    customer_contacts,
    customer_erasure,
    held_team_alerts,
    merchant_locks,
    merchant_settings,
    message_queue,
    webhook_store,
)
from refundflow_notifier.customer_emails import EMAILED, customer_email
from refundflow_notifier.notification_rules import (
    ALERT_ONLY_EVENT_TYPES,
    MerchantPreferences,
    team_alerts,
    too_many_endpoints_alert,
)
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.event_contract import NOTIFIER
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    WEBHOOK_EVENT_TYPES,
    CustomerErased,
    Event,
    EventData,
    NotificationSettingsConfigured,
    PasswordResetRequested,
    TeamMemberInvited,
    WebhookEndpointConfigured,
    WebhookEndpointDisabled,
)
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox
from refundflow_shared.tracing import current_traceparent

log = structlog.get_logger(__name__)

# Events the notifier reads only for what they say of a payment's customer (the emails of later events use it).
CONTACT_ONLY_EVENT_TYPES = ("subscription.cancel_requested", "subscription.extension_granted")


@dataclass(frozen=True)
class Notifications:
    """What one event leaves to queue: its webhook (with the trace it continues), its messages, and the alerts the
    merchant's settings, as its handler read them, route nowhere."""

    webhook: tuple[Event, str | None] | None
    messages: list[message_queue.QueuedMessage]
    unrouted: list[held_team_alerts.RaisedAlert] = field(default_factory=list)


async def notify(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    box: SecretBox | None,
    event: Event,
    data: EventData,
    contacts: Mapping[uuid.UUID, customer_contacts.Remembered],
) -> Notifications:
    """Remember what the event says of the customer (``contacts``: what its batch's first events of each payment
    said, remembered before the handlers ran), and say what it leaves to queue (``queue_notifications``)."""
    webhook = (event, current_traceparent()) if event.type.value in WEBHOOK_EVENT_TYPES else None
    alerts = team_alerts(data)
    payment_id: str | None = getattr(data, "payment_id", None)
    remembered = contacts[event.id] if event.id in contacts else await customer_contacts.remember(conn, data)
    emailed_payment = payment_id if isinstance(data, EMAILED) else None  # whose customer may get an email
    if not alerts and emailed_payment is None:
        return Notifications(webhook, [])  # nothing to send (payment.refunded, say): no settings to read
    contact: customer_contacts.Contact | None = None
    if remembered is None:
        prefs = await merchant_settings.preferences(conn, settings, data.merchant_id)
    else:  # the upsert read the merchant's settings too
        contact, prefs = remembered[0], merchant_settings.preferences_from(settings, remembered[1])
    messages = []
    if emailed_payment is not None:
        messages += await _email_to_the_customer(conn, settings, box, prefs, event, data, emailed_payment, contact)
    if not prefs.routes_team_alerts:  # unless settings that do committed since (``queue_notifications``): waits
        kept = webhook is not None  # in webhook_events, whence settings that come make its alerts again
        raised = [
            held_team_alerts.RaisedAlert(event.id, data.merchant_id, event.time, alert, kept_as_webhook_event=kept)
            for alert in alerts
        ]
        return Notifications(webhook, messages, raised)
    for alert in alerts:
        messages += message_queue.team_alert(
            settings, prefs, event_id=event.id, merchant_id=data.merchant_id, alert=alert
        )
    return Notifications(webhook, messages)


async def queue_notifications(
    conn: asyncpg.Connection, settings: NotifierSettings, notifications: list[Notifications]
) -> None:
    """Queue what a batch of events left to queue: their webhooks in one round trip, their messages in another
    (with the alerts their settings route by now; the others wait, ``held_team_alerts``)."""
    webhooks = {n.webhook[0].id: n.webhook for n in notifications if n.webhook is not None}
    messages = [message for n in notifications for message in n.messages]
    unrouted = [raised for n in notifications for raised in n.unrouted]
    cap = settings.webhook_max_endpoints_per_event
    # The locks of the events' and the unrouted alerts' merchants (``merchant_locks``), taken once, in a statement
    # before every one they guard: ``queue_events``' (it reads the endpoints, and stores the events a release reads),
    # then ``route_or_hold``'s read of the settings. A configuration that committed first is then read, and one
    # waiting for this transaction reads what it wrote. The over-cap alerts' merchants are the events'.
    unrouted_merchants = [raised.merchant_id for raised in unrouted]
    _, over_cap = await webhook_store.queue_events(conn, list(webhooks.values()), cap, also_locking=unrouted_merchants)
    for event_id in over_cap:  # intake allows no more: a bug, or an event that did not come from intake
        event, traceparent = webhooks[event_id]
        merchant_id = event.data.merchant_id
        log.error("webhook_fanout_capped", event_id=str(event_id), merchant_id=merchant_id, cap=cap)
        alert = too_many_endpoints_alert(cap)
        once_a_day = _once_a_day(merchant_id, alert.kind)
        unrouted.append(held_team_alerts.RaisedAlert(once_a_day, merchant_id, event.time, alert, traceparent))
    messages += await held_team_alerts.route_or_hold(conn, settings, unrouted)
    await message_queue.queue(conn, messages)


async def settings_announced(
    conn: asyncpg.Connection, settings: NotifierSettings, event: Event, data: NotificationSettingsConfigured
) -> None:
    """Take the merchant's settings as announced and, where the merchant's settings routed alerts nowhere, send
    those since then that they route: those alerts' events travel on other partitions and may be handled first
    (``held_team_alerts``). Settings that routed them already sent them as they were handled."""
    await merchant_locks.configuring(conn, data.merchant_id)
    routed = (await merchant_settings.preferences(conn, settings, data.merchant_id)).routes_team_alerts
    if await merchant_settings.save(conn, data, at=event.time, sequence=event.sequence) and not routed:
        await message_queue.queue(
            conn, await held_team_alerts.release(conn, settings, data.merchant_id, since=event.time)
        )


async def _email_to_the_customer(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    box: SecretBox | None,
    prefs: MerchantPreferences,
    event: Event,
    data: EventData,
    payment_id: str,
    contact: customer_contacts.Contact | None,
) -> list[message_queue.QueuedMessage]:
    """The event's email to the payment's customer, if it has one."""
    if contact is None:  # the event says nothing of the customer: what earlier ones said
        contact = await customer_contacts.recall(conn, data.merchant_id, payment_id)
    # With the portal off, no link: not even the decision's, which the processor's outcomes still carry.
    no_link = customer_contacts.CustomerLink()
    link = customer_contacts.link_for(contact, box, payment_id, datetime.now(UTC)) if prefs.portal_enabled else no_link
    email = customer_email(data, prefs, contact, link)
    if email is None:
        return []
    return message_queue.email(
        settings,
        replace(prefs, sender_name=prefs.sender_name or email.content.context["merchant"]),
        event_id=event.id,
        merchant_id=data.merchant_id,
        recipient=email.recipient,
        content=email.content,
        refund_id=getattr(data, "refund_id", None),
        follows_step=email.follows_step,
    )


def _once_a_day(merchant_id: str, kind: str) -> uuid.UUID:
    """An alert's id, one per merchant and day: the team hears it once a day, however many events raise it."""
    day = datetime.now(UTC).date().isoformat()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"refundflow:{merchant_id}:{kind}:{day}")


def register(consumer: EventConsumer, settings: NotifierSettings) -> None:
    key = settings.webhook_secret_key
    box = SecretBox(key.get_secret_value()) if key else None

    async def notify_of(
        conn: asyncpg.Connection,
        event: Event,
        data: EventData,
        contacts: Mapping[uuid.UUID, customer_contacts.Remembered],
    ) -> Notifications:
        return await notify(conn, settings, box, event, data, contacts)

    async def queue_them(conn: asyncpg.Connection, notifications: list[Notifications]) -> None:
        await queue_notifications(conn, settings, notifications)

    for event_type in (*WEBHOOK_EVENT_TYPES, *ALERT_ONLY_EVENT_TYPES, *CONTACT_ONLY_EVENT_TYPES):
        consumer.handles(
            EVENT_DATA_TYPES[event_type], finish=queue_them, prepare=customer_contacts.remember_first_of_each_payment
        )(notify_of)

    @consumer.handles(WebhookEndpointConfigured)
    async def endpoint_configured(conn: asyncpg.Connection, event: Event, data: WebhookEndpointConfigured) -> None:
        kept_disabled = await webhook_store.apply_endpoint(conn, data, event.time)
        if kept_disabled is not None:
            version, reason = kept_disabled
            disabled = WebhookEndpointDisabled(
                merchant_id=data.merchant_id, endpoint_id=data.endpoint_id, reason=reason, version=version
            )
            await add_event(conn, disabled, source=NOTIFIER.source)

    @consumer.handles(NotificationSettingsConfigured)
    async def settings_configured(conn: asyncpg.Connection, event: Event, data: NotificationSettingsConfigured) -> None:
        await settings_announced(conn, settings, event, data)

    @consumer.handles(TeamMemberInvited)
    async def member_invited(conn: asyncpg.Connection, event: Event, data: TeamMemberInvited) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)

    @consumer.handles(PasswordResetRequested)
    async def reset_requested(conn: asyncpg.Connection, event: Event, data: PasswordResetRequested) -> None:
        await account_emails.queue_account_email(conn, settings, box, event, data)

    @consumer.handles(CustomerErased)
    async def customer_erased(conn: asyncpg.Connection, event: Event, data: CustomerErased) -> None:
        await customer_erasure.erase_payment(conn, data.merchant_id, data.payment_id)
