"""Erasing one customer's personal data at a merchant's request (GDPR Art. 17).

What is erased: on the merchant's payments to the address, the address and the name; on their refunds, what the
customer wrote (the reason's details, their portal message) and what the merchant wrote about or to them (decision
notes, notes to the customer, on the refund, its approvals and its timeline, whose customer actor loses the
address); the events of those payments still kept in the outbox or waiting for another. What is kept: every id,
amount, currency, status, date and reason code, and the ledger, so the money's history stays auditable. The
processor and the notifier erase their copies on ``customer.erased``, one per payment, published in the same
transaction.

The erasure is of the data held, not a block: a later payment to the address is registered as any other. A replay of
an erased payment's registration is that payment again (``repository.payment_differences``) and restores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from refundflow_intake import actors, idempotency
from refundflow_intake.domain import Channel
from refundflow_intake.merchant_accounts import new_id
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import ERASED_ADDRESS, ERASED_FIELDS, CustomerErased
from refundflow_shared.outbox import add_events, erase_customer_from_events

log = structlog.get_logger(__name__)

ERASED_ACTOR = actors.customer("erased")
# Timeline entries whose note is the customer's words or the merchant's about or to them; the others (provider
# outcomes, subscription outcomes, review deadlines) are the system's and are kept. A request's note keeps its reason
# code and loses the details ("reason: details").
_DECISION_ACTIONS = ("approved", "rejected", "cancel_only", "approval_restarted")


@dataclass(frozen=True)
class Erasure:
    id: str
    payments_erased: int
    refunds_erased: int
    erased_at: datetime


def normalised(address: str) -> str:
    """The address as it is matched: mail reaches it whatever its letters' case (the registration compares so)."""
    return address.strip().lower()


def address_hmac(key: bytes, merchant_id: str, address: str) -> bytes:
    """What names the erased customer: keyed, and per merchant, so nobody without the key can tell who it is."""
    return hmac.new(key, f"{merchant_id}/{normalised(address)}".encode(), hashlib.sha256).digest()


def request_fingerprint(key: bytes, merchant_id: str, address: str) -> bytes:
    """The Idempotency-Key's request hash, of the HMAC rather than the address (an unkeyed hash would name it)."""
    return idempotency.fingerprint({"email_hmac": address_hmac(key, merchant_id, address).hex()})


async def erase_customer(
    conn: asyncpg.Connection, key: bytes, merchant_id: str, address: str, idempotency_key: str | None, *, actor: str
) -> tuple[Erasure, bool]:
    """Erase the customer at ``address`` from the merchant's payments and refunds, in the caller's transaction:
    (the erasure, replayed). A retry under the same Idempotency-Key is answered the first erasure; asked again
    without one, it is a new erasure of what is left (nothing, unless payments came since)."""
    if idempotency_key is not None:
        fingerprint = request_fingerprint(key, merchant_id, address)
        earlier = await idempotency.claim(conn, merchant_id, Channel.API, idempotency_key, fingerprint)
        if earlier is not None:
            return await _erasure(conn, earlier), True
    payment_ids: list[str] = [
        row["id"]
        for row in await conn.fetch(
            "UPDATE payments SET customer_email = $3, customer_name = NULL, erased_at = now()"
            " WHERE merchant_id = $1 AND lower(customer_email) = $2 RETURNING id",
            merchant_id,
            normalised(address),
            ERASED_ADDRESS,
        )
    ]
    refunds = await _erase_refunds(conn, payment_ids)
    await erase_customer_from_events(conn, payment_ids)
    await _erase_awaiting_events(conn, merchant_id, payment_ids)
    erasure_id = new_id("era")
    row = await conn.fetchrow(
        "INSERT INTO customer_erasures (id, merchant_id, address_hmac, payments_erased, refunds_erased, erased_by)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        erasure_id,
        merchant_id,
        address_hmac(key, merchant_id, address),
        len(payment_ids),
        refunds,
        actor,
    )
    await add_events(
        conn,
        [CustomerErased(merchant_id=merchant_id, payment_id=p, erasure_id=erasure_id) for p in sorted(payment_ids)],
        source=INTAKE.source,
    )
    if idempotency_key is not None:
        await idempotency.remember(conn, merchant_id, Channel.API, idempotency_key, customer_erasure_id=erasure_id)
    log.info("customer_erased", erasure_id=erasure_id, payments=len(payment_ids), refunds=refunds)
    return _from_row(row), False


async def _erase_refunds(conn: asyncpg.Connection, payment_ids: list[str]) -> int:
    refund_ids: list[str] = [
        row["id"]
        for row in await conn.fetch(
            "UPDATE refunds SET reason_details = NULL, decision_note = NULL, customer_note = NULL"
            " WHERE payment_id = ANY($1::text[]) RETURNING id",
            payment_ids,
        )
    ]
    await conn.execute("UPDATE refund_approvals SET customer_note = NULL WHERE refund_id = ANY($1::text[])", refund_ids)
    await conn.execute(
        "UPDATE refund_timeline SET"
        " actor = CASE WHEN actor LIKE $2 THEN $3 ELSE actor END,"
        " note = CASE WHEN action = 'requested' THEN split_part(note, ':', 1)"
        "             WHEN action = ANY($4::text[]) OR action LIKE 'approval\\_%\\_of\\_%' THEN NULL"
        "             ELSE note END"
        " WHERE refund_id = ANY($1::text[])",
        refund_ids,
        actors.CUSTOMER + "%",
        ERASED_ACTOR,
        list(_DECISION_ACTIONS),
    )
    return len(refund_ids)


async def _erase_awaiting_events(conn: asyncpg.Connection, merchant_id: str, payment_ids: list[str]) -> None:
    """Events parked for another (a reversal before its success, say) carry the address: erased as the outbox's."""
    await conn.execute(
        "UPDATE awaiting_events SET data = (data - $3::text[])"
        " || CASE WHEN data ? 'customer_email' THEN jsonb_build_object('customer_email', $4::text) ELSE '{}' END"
        " WHERE data->>'merchant_id' = $1 AND data->>'payment_id' = ANY($2::text[])",
        merchant_id,
        payment_ids,
        list(ERASED_FIELDS),
        ERASED_ADDRESS,
    )


async def _erasure(conn: asyncpg.Connection, erasure_id: str) -> Erasure:
    row = await conn.fetchrow("SELECT * FROM customer_erasures WHERE id = $1", erasure_id)
    assert row is not None, "an Idempotency-Key names the erasure it made"
    return _from_row(row)


def _from_row(row: asyncpg.Record) -> Erasure:
    return Erasure(row["id"], row["payments_erased"], row["refunds_erased"], row["erased_at"])
