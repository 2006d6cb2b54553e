"""A customer the merchant erased (``customer.erased``, one per payment): the notifier forgets their contact for the
payment, does not send the emails to them still queued, takes their address out of the emails' records, and erases
them from the webhook events it keeps for replays. Team alerts and webhooks of later events still go."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_shared.events import ERASED_ADDRESS, ERASED_FIELDS

log = structlog.get_logger(__name__)

ERASED_ERROR = "customer_erased"


async def erase_payment(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> None:
    """Erase the payment's customer from the notifier's rows, and remember the payment erased."""
    await conn.execute(
        "INSERT INTO erased_payments (payment_id, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        payment_id,
        merchant_id,
    )
    address = await conn.fetchval(
        "DELETE FROM customer_contacts WHERE payment_id = $1 AND merchant_id = $2 RETURNING customer_email",
        payment_id,
        merchant_id,
    )
    # The emails to the address (the merchant erased the customer, all of whose payments go the same way): those
    # not sent yet are not, and none keeps the address or what it said.
    cancelled = 0
    if address:
        status = await conn.execute(
            "UPDATE messages SET status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,"
            " error = CASE WHEN status = 'pending' THEN $3 ELSE error END,"
            " finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,"
            " recipient = $4, body = NULL, dedupe_key = 'erased/' || id"
            " WHERE merchant_id = $1 AND channel = 'email' AND lower(recipient) = lower($2)",
            merchant_id,
            address,
            ERASED_ERROR,
            ERASED_ADDRESS,
        )
        cancelled = int(status.split()[-1])
    await conn.execute(
        f"UPDATE webhook_events SET payload = {erased_webhook_payload('payload')}"
        " WHERE merchant_id = $1 AND payload::jsonb -> 'data' ->> 'payment_id' = $2",
        merchant_id,
        payment_id,
    )
    log.info("customer_erased", emails_erased=cancelled)


_ERASED_KEYS = "ARRAY[" + ", ".join(f"'{name}'" for name in ERASED_FIELDS) + "]::text[]"


def erased_webhook_payload(payload: str) -> str:
    """SQL: a webhook event's JSON text (``payload``) with the customer erased from its data (as
    ``events.erased_payload``): the address '' where there is one, the other fields left out."""
    data = f"({payload}::jsonb -> 'data')"  # in parentheses: '-' binds tighter than '->'
    return (
        f"jsonb_set({payload}::jsonb, '{{data}}', ({data} - {_ERASED_KEYS})"
        f" || CASE WHEN {data} ? 'customer_email' THEN jsonb_build_object('customer_email', '{ERASED_ADDRESS}')"
        " ELSE '{}'::jsonb END)::text"
    )


def erased_or_kept_webhook_payload(payload: str, payment_id: str) -> str:
    """SQL: the payload as a webhook event of the payment is stored (and so signed and sent): erased when the payment
    is, so an old event read again (redelivered, or republished under a new id) brings nothing back. Part of the
    statement that stores the events: no round trip of its own."""
    return (
        f"CASE WHEN EXISTS (SELECT 1 FROM erased_payments WHERE payment_id = {payment_id})"
        f" THEN {erased_webhook_payload(payload)} ELSE {payload} END"
    )
