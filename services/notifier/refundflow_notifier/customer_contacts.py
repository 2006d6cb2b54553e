"""What the notifier last heard of each payment's customer: their address, the merchant's name, the freshest
portal link and the refund policy's process time. Every customer-facing event carries its own (intake's, and the
processor's outcomes those of the decision); this fills what an event lacks, and keeps the freshest link.

The portal link arrives sealed (``SecretBox``, bound to the payment id); it is kept sealed, and opened only to be
put in an email, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from refundflow_notifier.merchant_settings import PREFERENCE_COLUMNS
from refundflow_shared.events import (
    EventData,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReversed,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelRequested,
    SubscriptionExtended,
    SubscriptionExtensionGranted,
)
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)

# A link that would stop working this soon after the email is sent is not offered: the email says it expired.
LINK_MARGIN = timedelta(hours=1)
# Intake's events say the portal as it is now: no link there means the merchant switched its portal off.
FROM_INTAKE = (
    RefundRequested,
    RefundApproved,
    RefundRejected,
    SubscriptionCancelRequested,
    SubscriptionExtensionGranted,
)
# The processor's outcomes carry the decision's words, which may be older than what is kept.
CARRIED = (RefundSucceeded, RefundFailed, RefundReversed, SubscriptionCanceled, SubscriptionExtended)


_CONTACT_FIELDS = ("customer_email", "merchant_name", "sealed_portal_url", "portal_url_expires_at", "process_time")
_CONTACT_COLUMNS = ", ".join(_CONTACT_FIELDS)


@dataclass(frozen=True)
class Contact:
    customer_email: str | None = None
    merchant_name: str | None = None
    sealed_portal_url: str | None = None
    portal_url_expires_at: datetime | None = None
    process_time: str | None = None


@dataclass(frozen=True)
class CustomerLink:
    """The link to put in an email: ``url`` None when there is none to give, ``expired`` when the one we had
    no longer works (the email then says so)."""

    url: str | None = None
    until: datetime | None = None
    expired: bool = False


async def remember(conn: asyncpg.Connection, data: EventData) -> tuple[Contact, asyncpg.Record] | None:
    """Keep what a customer-facing event says of the payment's customer: the freshest link (events of one payment
    may arrive out of order across topics), or none when intake now sends none (the merchant switched its portal
    off), and the rest as last said. Returns what is now known of them (the upsert returns it: no second read), or
    None when the event says nothing of the customer.

    With it comes the merchant's settings row (``merchant_settings.PREFERENCE_COLUMNS``, all None when it set
    none), read in the same round trip: the event's email and alerts need them."""
    if not isinstance(data, FROM_INTAKE + CARRIED):
        return None
    link, now_says = data.portal_link, isinstance(data, FROM_INTAKE)
    row = await conn.fetchrow(
        "WITH kept AS (INSERT INTO customer_contacts AS c (payment_id, merchant_id, customer_email, merchant_name,"
        " sealed_portal_url, portal_url_expires_at, process_time) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (payment_id) DO UPDATE SET"
        " customer_email = coalesce(EXCLUDED.customer_email, c.customer_email),"
        " merchant_name = coalesce(EXCLUDED.merchant_name, c.merchant_name),"
        " sealed_portal_url = CASE WHEN EXCLUDED.sealed_portal_url IS NULL THEN"
        "   CASE WHEN $8 THEN NULL ELSE c.sealed_portal_url END"
        "   WHEN c.portal_url_expires_at IS NULL OR EXCLUDED.portal_url_expires_at > c.portal_url_expires_at"
        "   THEN EXCLUDED.sealed_portal_url ELSE c.sealed_portal_url END,"
        " portal_url_expires_at = CASE WHEN EXCLUDED.sealed_portal_url IS NULL THEN"
        "   CASE WHEN $8 THEN NULL ELSE c.portal_url_expires_at END"
        "   ELSE greatest(EXCLUDED.portal_url_expires_at, c.portal_url_expires_at) END,"
        " process_time = coalesce(EXCLUDED.process_time, c.process_time), updated_at = now()"
        " WHERE c.merchant_id = EXCLUDED.merchant_id"
        f" RETURNING {_CONTACT_COLUMNS})"
        # One row whatever the upsert kept (nothing, when the payment is another merchant's) and the merchant set.
        " SELECT kept.*, s.* FROM (VALUES (1)) AS one LEFT JOIN kept ON true"
        f" LEFT JOIN (SELECT {PREFERENCE_COLUMNS} FROM merchant_settings WHERE merchant_id = $2) AS s ON true",
        data.payment_id,
        data.merchant_id,
        data.customer_email,
        data.merchant_name,
        link.sealed_url if link else None,
        link.expires_at if link else None,
        data.process_time if isinstance(data, RefundApproved | RefundSucceeded) else None,
        now_says,
    )
    assert row is not None, "the outer query always has its one row"
    return Contact(**{name: row[name] for name in _CONTACT_FIELDS}), row


async def recall(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> Contact:
    """What is known of the payment's customer (nothing, when intake never spoke of them)."""
    row = await conn.fetchrow(
        f"SELECT {_CONTACT_COLUMNS} FROM customer_contacts WHERE payment_id = $1 AND merchant_id = $2",
        payment_id,
        merchant_id,
    )
    return Contact(**dict(row)) if row else Contact()


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
