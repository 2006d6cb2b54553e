"""What the notifier last heard of each payment's customer: their address, the merchant's name, the freshest
portal link and the refund policy's process time. Every customer-facing event carries its own (intake's, and the
processor's outcomes those of the decision); this fills what an event lacks, and keeps the freshest link.

The portal link arrives sealed (``SecretBox``, bound to the payment id); it is kept sealed, and opened only to be
put in an email, never logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeGuard

import asyncpg
import structlog

from refundflow_notifier.merchant_settings import PREFERENCE_COLUMNS
from refundflow_shared.events import (
    LINK_MARGIN,
    Event,
    EventData,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReversed,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionCancelRequested,
    SubscriptionExtended,
    SubscriptionExtensionGranted,
)
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)

# Intake's events say the portal as it is now: no link there means the merchant switched its portal off.
FROM_INTAKE = (
    RefundRequested,
    RefundApproved,
    RefundRejected,
    SubscriptionCancelRequested,
    SubscriptionExtensionGranted,
)
# The processor's outcomes carry the decision's words, which may be older than what is kept.
CARRIED = (
    RefundSucceeded,
    RefundFailed,
    RefundReversed,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
)
CustomerFacing = (
    RefundRequested
    | RefundApproved
    | RefundRejected
    | SubscriptionCancelRequested
    | SubscriptionExtensionGranted
    | RefundSucceeded
    | RefundFailed
    | RefundReversed
    | SubscriptionCanceled
    | SubscriptionCancelFailed
    | SubscriptionExtended
)


_CONTACT_FIELDS = ("customer_email", "merchant_name", "sealed_portal_url", "portal_url_expires_at", "process_time")
_CONTACT_COLUMNS = ", ".join(_CONTACT_FIELDS)


@dataclass(frozen=True)
class Contact:
    customer_email: str | None = None
    merchant_name: str | None = None
    sealed_portal_url: str | None = None
    portal_url_expires_at: datetime | None = None
    process_time: str | None = None
    erased: bool = False  # the merchant erased the payment's customer: nothing is kept of them, nothing is sent


@dataclass(frozen=True)
class CustomerLink:
    """The link to put in an email: ``url`` None when there is none to give, ``expired`` when the one we had
    no longer works (the email then says so)."""

    url: str | None = None
    until: datetime | None = None
    expired: bool = False


Remembered = tuple[Contact, asyncpg.Record]  # what is known of the customer, and the merchant's settings row


async def remember(conn: asyncpg.Connection, data: EventData) -> Remembered | None:
    """Keep what a customer-facing event says of the payment's customer: the freshest link (events of one payment
    may arrive out of order across topics), or none when intake now sends none (the merchant switched its portal
    off), and the rest as last said. Returns what is now known of them (the upsert returns it: no second read), or
    None when the event says nothing of the customer.

    With it comes the merchant's settings row (``merchant_settings.PREFERENCE_COLUMNS``, all None when it set
    none), read in the same round trip: the event's email and alerts need them."""
    if not speaks_of_the_customer(data):
        return None
    return (await _remember_each_payment(conn, [data]))[0]


def speaks_of_the_customer(data: EventData) -> TypeGuard[CustomerFacing]:
    return isinstance(data, FROM_INTAKE + CARRIED)


async def remember_first_of_each_payment(conn: asyncpg.Connection, events: list[Event]) -> dict[uuid.UUID, Remembered]:
    """``remember`` for a batch's events in one round trip, by event id: the first event of each payment only (one
    statement cannot change a row twice; a payment's later events are remembered after it, one by one)."""
    first: dict[str, tuple[uuid.UUID, CustomerFacing]] = {}
    for event in events:
        data = event.data
        if speaks_of_the_customer(data) and data.payment_id not in first:
            first[data.payment_id] = (event.id, data)
    if not first:
        return {}
    remembered = await _remember_each_payment(conn, [data for _, data in first.values()])
    return {event_id: kept for (event_id, _), kept in zip(first.values(), remembered, strict=True)}


async def _remember_each_payment(conn: asyncpg.Connection, events: Sequence[CustomerFacing]) -> list[Remembered]:
    """What ``remember`` returns for each event (of different payments), in order, in one round trip."""
    links = [data.portal_link for data in events]
    rows = await conn.fetch(
        _REMEMBER,
        [data.payment_id for data in events],
        [data.merchant_id for data in events],
        [data.customer_email for data in events],
        [data.merchant_name for data in events],
        [link.sealed_url if link else None for link in links],
        [link.expires_at if link else None for link in links],
        [data.process_time if isinstance(data, RefundApproved | RefundSucceeded) else None for data in events],
        [isinstance(data, FROM_INTAKE) for data in events],  # intake's events say the portal as it is now
    )
    return [(Contact(**{name: row[name] for name in _CONTACT_FIELDS}, erased=row["erased"]), row) for row in rows]


# Per payment, one row whatever the upsert kept (nothing, when the payment is another merchant's) and the merchant set.
_REMEMBER = f"""
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                         $8::bool[]) WITH ORDINALITY
        AS g(payment_id, merchant_id, customer_email, merchant_name, sealed_portal_url, portal_url_expires_at,
             process_time, now_says, n)
), erased AS (
    SELECT payment_id FROM erased_payments WHERE payment_id IN (SELECT payment_id FROM given)
), kept AS (
    INSERT INTO customer_contacts AS c (payment_id, merchant_id, customer_email, merchant_name, sealed_portal_url,
                                        portal_url_expires_at, process_time)
    SELECT payment_id, merchant_id, customer_email, merchant_name, sealed_portal_url, portal_url_expires_at,
           process_time
    FROM given WHERE payment_id NOT IN (SELECT payment_id FROM erased)  -- an erased customer is kept no more
    ORDER BY payment_id  -- every batch takes the rows in one order: two never wait on each other
    ON CONFLICT (payment_id) DO UPDATE SET
        customer_email = coalesce(EXCLUDED.customer_email, c.customer_email),
        merchant_name = coalesce(EXCLUDED.merchant_name, c.merchant_name),
        sealed_portal_url = CASE WHEN EXCLUDED.sealed_portal_url IS NULL THEN
            CASE WHEN (SELECT now_says FROM given WHERE given.payment_id = EXCLUDED.payment_id) THEN NULL
                 ELSE c.sealed_portal_url END
            WHEN c.portal_url_expires_at IS NULL OR EXCLUDED.portal_url_expires_at > c.portal_url_expires_at
            THEN EXCLUDED.sealed_portal_url ELSE c.sealed_portal_url END,
        portal_url_expires_at = CASE WHEN EXCLUDED.sealed_portal_url IS NULL THEN
            CASE WHEN (SELECT now_says FROM given WHERE given.payment_id = EXCLUDED.payment_id) THEN NULL
                 ELSE c.portal_url_expires_at END
            ELSE greatest(EXCLUDED.portal_url_expires_at, c.portal_url_expires_at) END,
        process_time = coalesce(EXCLUDED.process_time, c.process_time), updated_at = now()
    WHERE c.merchant_id = EXCLUDED.merchant_id
    RETURNING payment_id, {_CONTACT_COLUMNS}
)
SELECT {", ".join(f"kept.{name}" for name in _CONTACT_FIELDS)},
       g.payment_id IN (SELECT payment_id FROM erased) AS erased, s.*
FROM given g
LEFT JOIN kept ON kept.payment_id = g.payment_id
LEFT JOIN LATERAL (SELECT {PREFERENCE_COLUMNS} FROM merchant_settings WHERE merchant_id = g.merchant_id) AS s ON true
ORDER BY g.n
"""


async def recall(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> Contact:
    """What is known of the payment's customer (nothing, when intake never spoke of them)."""
    row = await conn.fetchrow(
        f"SELECT {', '.join(f'c.{name}' for name in _CONTACT_FIELDS)},"
        " EXISTS (SELECT 1 FROM erased_payments WHERE payment_id = $1) AS erased"
        " FROM (SELECT 1) AS one"
        " LEFT JOIN customer_contacts c ON c.payment_id = $1 AND c.merchant_id = $2",
        payment_id,
        merchant_id,
    )
    assert row is not None  # the one row of the left join
    return Contact(**dict(row))


def link_for(contact: Contact, box: SecretBox | None, payment_id: str, now: datetime) -> CustomerLink:
    """The portal link an email may carry now."""
    if contact.sealed_portal_url is None or contact.portal_url_expires_at is None:
        return CustomerLink()
    if contact.portal_url_expires_at <= now + LINK_MARGIN:
        return CustomerLink(expired=True)
    if box is None:
        log.warning("portal_link_unreadable", payment_id=payment_id, why="WEBHOOK_SECRET_KEY is not set")
        return CustomerLink()
    try:
        url = box.open(contact.sealed_portal_url, context=payment_id)
    except SecretBoxError:
        log.error("portal_link_unreadable", payment_id=payment_id, why="it does not open with our keys")
        return CustomerLink()
    return CustomerLink(url=url, until=contact.portal_url_expires_at)
