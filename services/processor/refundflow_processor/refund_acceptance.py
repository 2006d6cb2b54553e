"""Accepting an approved refund: checked against what the processor knows of the payment, before any call.

The broker is trusted by design; these checks are defence in depth (security review, findings 1 and 3): a
refund must name the provider payment the processor learnt for its payment, in its currency, and may not
take more than the payment has left.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
import structlog

from refundflow_processor import payment_repository, repository
from refundflow_processor.records import Payment, Refund, RefundStatus
from refundflow_processor.refund_outcomes import publish_failure
from refundflow_processor.team_alerts import raise_alert
from refundflow_shared.events import RefundApproved, customer_fields
from refundflow_shared.money import format_amount

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def approval_refusal(payment: Payment | None, refund: Refund, held: int) -> Refusal | None:
    """Why the processor must not execute ``refund`` (None: execute it). ``held``: what the payment's other
    refunds use up or may still use up."""
    if payment is None or (payment.merchant_id, payment.provider_payment_id) != (
        refund.merchant_id,
        refund.provider_payment_id,
    ):
        return Refusal(
            "provider_payment_mismatch",
            f"the approval names provider payment {refund.provider_payment_id}, which is not the one known for"
            f" payment {refund.payment_id} of this merchant",
        )
    if payment.currency != refund.currency:
        return Refusal(
            "currency_mismatch", f"the refund is in {refund.currency}, the payment was in {payment.currency}"
        )
    if held + refund.amount > payment.amount:
        asked, total, paid = (
            format_amount(a, refund.currency) for a in (refund.amount, held + refund.amount, payment.amount)
        )
        return Refusal("exceeds_refundable", f"{asked} would bring the payment's refunds to {total} of {paid}")
    return None


async def accept_approved_refund(
    conn: asyncpg.Connection, data: RefundApproved, locked: Payment | None, *, approved_at: datetime
) -> bool:
    """Record the refund and schedule its first attempt, or fail it at once; False if it was already known.
    ``locked``: the payment, if the caller locked it already; ``approved_at``: the approval event's time."""
    refund = Refund(
        refund_id=data.refund_id,
        payment_id=data.payment_id,
        merchant_id=data.merchant_id,
        customer_email=data.customer_email,
        amount=data.amount,
        currency=data.currency,
        provider_payment_id=data.provider_payment_id,
        payment_amount=data.payment_amount,
        to_customer=customer_fields(data, besides=("customer_email",)),
    )
    payment = locked or await payment_repository.lock_payment(conn, data.payment_id)  # the cap holds under this lock
    if payment is None:  # the approval came before payment.succeeded: learn the payment from it (untrusted)
        claimed = Payment(
            data.payment_id, data.merchant_id, data.provider_payment_id, data.payment_amount, data.currency
        )
        await payment_repository.remember_payment(conn, claimed, trusted=False)
        payment = await payment_repository.lock_payment(conn, data.payment_id)
    refusal = approval_refusal(payment, refund, await repository.held_total(conn, data.payment_id))
    if refusal is None:
        if not await repository.insert_refund_and_first_attempt(conn, refund, approved_at):
            return False
        await payment_repository.scan_payment_soon(conn, data.payment_id)  # what the refund makes is looked at soon
        log.info("refund_scheduled")
        return True
    failed = replace(refund, status=RefundStatus.FAILED)
    recorded = await repository.insert_refund(
        conn, failed, failure_reason=refusal.reason, failure_message=refusal.message
    )
    if recorded is None:
        return False
    log.error("refund_refused_before_any_call", reason=refusal.reason, message=refusal.message)
    await publish_failure(conn, recorded, refusal.reason, refusal.message)  # as recorded: none of an erased customer
    await raise_alert(
        conn,
        merchant_id=refund.merchant_id,
        kind=refusal.reason,
        title="An approved refund was not executed: it does not match the payment",
        details={"reason": refusal.message, "amount": format_amount(refund.amount, refund.currency)},
        payment_id=refund.payment_id,
        refund_id=refund.refund_id,
    )
    return True
