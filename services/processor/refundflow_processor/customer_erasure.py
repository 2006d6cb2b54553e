"""A customer the merchant erased (``customer.erased``, one per payment): the processor's copies of their personal
data for the payment are overwritten, and a decision of the payment read afterwards keeps none."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_shared.events import ERASED_ADDRESS, ERASED_FIELDS
from refundflow_shared.outbox import erase_customer_from_events

log = structlog.get_logger(__name__)

# What a decision kept for its outcome's email and the erasure takes out of it (``events.CUSTOMER_FIELDS``): the
# address and the personal words; the merchant's name, the process time and the flags stay.
_ERASED_TO_CUSTOMER = ["customer_email", *ERASED_FIELDS]
_ERASED_KEYS = "ARRAY[" + ", ".join(f"'{name}'" for name in _ERASED_TO_CUSTOMER) + "]::text[]"


async def erase_payment(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> None:
    """Erase the payment's customer from the processor's rows and outbox, and remember it erased."""
    await conn.execute(_ERASE, payment_id, merchant_id, ERASED_ADDRESS)
    await erase_customer_from_events(conn, [payment_id])
    log.info("customer_erased")


def address_kept(address: str, payment_id: str) -> str:
    """SQL: the address a decision (``address``) of the payment (``payment_id``) is recorded with: none once the
    payment is erased. Part of the decision's own insert: events of one payment come on several topics, so one may be
    read after the erasure, and checking costs no round trip of its own."""
    return (
        f"CASE WHEN EXISTS (SELECT 1 FROM erased_payments WHERE payment_id = {payment_id})"
        f" THEN '{ERASED_ADDRESS}' ELSE {address} END"
    )


def to_customer_kept(to_customer: str, payment_id: str) -> str:
    """SQL: what a decision keeps for its outcome's email (``to_customer``, jsonb), as ``address_kept``."""
    return (
        f"CASE WHEN EXISTS (SELECT 1 FROM erased_payments WHERE payment_id = {payment_id})"
        f" THEN {to_customer} - {_ERASED_KEYS} ELSE {to_customer} END"
    )


_ERASE = f"""
WITH erased AS (
    INSERT INTO erased_payments (payment_id, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
), refunds_erased AS (
    UPDATE refunds SET customer_email = $3, to_customer = to_customer - {_ERASED_KEYS}
    WHERE payment_id = $1 RETURNING 1
), cancels_erased AS (
    UPDATE subscription_cancels SET to_customer = to_customer - {_ERASED_KEYS}
    WHERE payment_id = $1 RETURNING 1
)
UPDATE subscription_extensions SET to_customer = to_customer - {_ERASED_KEYS}
WHERE payment_id = $1
"""
