"""Refunds made outside Refundflow (e.g. in the provider's dashboard): they use up the payment and the merchant's
balance as the provider reports them, pending -> succeeded | failed, succeeded -> failed; each move once."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_intake import ledger, repository
from refundflow_intake.awaited_events import Awaits, payment_registered
from refundflow_intake.domain import external_refund_change
from refundflow_shared.events import RefundExternalDetected

log = structlog.get_logger(__name__)


class ForeignRefund(ValueError):
    """A provider refund that is not this payment's (dead-lettered): reported for another payment than the one it
    was first reported for, or in another currency, or of another provider payment."""


async def record_external_refund(conn: asyncpg.Connection, data: RefundExternalDetected) -> bool:
    """Apply the provider's latest word on the refund; a repeat or a report going backwards changes nothing (False)."""
    # The payment's lock orders this with requests and approvals on the same payment.
    payment = await repository.get_payment(conn, data.merchant_id, data.payment_id, lock=True)
    if payment is None:
        # Billing's payment.succeeded comes on another topic, maybe later: applied once it is registered, else
        # dead-lettered with a team alert (without it the payment's refundable amount counts money that has left).
        raise Awaits(
            payment_registered(data.merchant_id, data.payment_id),
            f"no payment {data.payment_id} of merchant {data.merchant_id} yet",
        )
    for field in ("currency", "provider_payment_id"):
        if getattr(data, field) != payment[field]:
            raise ForeignRefund(
                f"provider refund {data.provider_refund_id}: its {field} is not payment {payment['id']}'s"
            )
    known = await conn.fetchrow(
        "SELECT payment_id, amount, currency, status FROM external_refunds WHERE provider_refund_id = $1 FOR UPDATE",
        data.provider_refund_id,
    )
    if known is not None and known["payment_id"] != data.payment_id:
        raise ForeignRefund(f"provider refund {data.provider_refund_id} belongs to another payment")
    before = known["status"] if known else None
    change = external_refund_change(before, data.status)
    if change is None:
        log.info("external_refund_unchanged", provider_refund_id=data.provider_refund_id, status=data.status)
        return False
    if known is None:
        await conn.execute(
            "INSERT INTO external_refunds (provider_refund_id, payment_id, merchant_id, amount, currency, status)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            data.provider_refund_id,
            data.payment_id,
            data.merchant_id,
            data.amount,
            data.currency,
            data.status,
        )
    else:
        await conn.execute(
            "UPDATE external_refunds SET status = $2, updated_at = now() WHERE provider_refund_id = $1",
            data.provider_refund_id,
            data.status,
        )
    money = {"merchant_id": data.merchant_id, **(dict(known) if known else data.model_dump())}
    source = data.provider_refund_id
    if change.hold:
        await ledger.record(conn, "external_refund_hold", source, money)
    if change.release:
        await ledger.record(conn, "external_refund_release", source, money)
    if change.debit:
        await repository.add_to_refunded_amount(conn, data.payment_id, money["amount"])
        await ledger.record(conn, "external_refund", source, money)
    if change.credit_back:
        await repository.add_to_refunded_amount(conn, data.payment_id, -money["amount"])
        await ledger.record(conn, "external_refund_reversal", source, money)
    log.warning("external_refund_recorded", provider_refund_id=source, status=data.status, before=before)
    return True
