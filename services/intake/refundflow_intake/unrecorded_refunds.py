"""Outcomes of refunds intake has no record of: made at the provider all the same, typically asked for after the
backup intake's database was restored from. The money left (or came back), so a success or a reversal is booked
from the event itself, as a refund found at the provider (``external_refunds``, keyed by the provider's refund id:
once, however often it is told, and not again when the processor's sync reports it), and the team is told; a
failure moved no money and is only logged. An outcome naming a payment the merchant does not have stays an error
(dead-lettered): nothing here could be booked against it."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_intake import repository
from refundflow_intake.domain import RefundNotFound
from refundflow_intake.external_refunds import record_external_refund
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import (
    RefundExternalDetected,
    RefundFailed,
    RefundReversed,
    RefundSucceeded,
    TeamAlertRaised,
)
from refundflow_shared.money import format_amount
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)


async def record_unrecorded_outcome(
    conn: asyncpg.Connection, data: RefundSucceeded | RefundFailed | RefundReversed
) -> None:
    """Book the provider's outcome of ``data.refund_id``, a refund intake does not hold, against its payment."""
    if await repository.get_refund(conn, data.refund_id) is not None:  # another merchant's refund
        raise RefundNotFound(f"no refund {data.refund_id} of merchant {data.merchant_id}")
    payment = await repository.get_payment(conn, data.merchant_id, data.payment_id)
    if payment is None:
        raise RefundNotFound(
            f"no refund {data.refund_id}, nor payment {data.payment_id} of merchant {data.merchant_id}"
        )
    if isinstance(data, RefundFailed):
        log.error("unrecorded_refund_failed", reason=data.failure_reason)
        return
    found = RefundExternalDetected(
        payment_id=data.payment_id,
        merchant_id=data.merchant_id,
        amount=data.amount,
        currency=data.currency,
        provider_refund_id=data.provider_refund_id,
        provider_payment_id=payment["provider_payment_id"],
        status="succeeded" if isinstance(data, RefundSucceeded) else "failed",
    )
    if not await record_external_refund(conn, found):
        return
    log.error("unrecorded_refund_booked", provider_refund_id=data.provider_refund_id, status=found.status)
    what = "refunded" if isinstance(data, RefundSucceeded) else "reversed (the money came back)"
    await add_event(
        conn,
        TeamAlertRaised(
            merchant_id=data.merchant_id,
            kind="unrecorded_refund_booked",
            title=f"A refund Refundflow has no record of was {what}: {format_amount(data.amount, data.currency)}",
            details={
                "provider refund": data.provider_refund_id,
                "what it means": (
                    "the payment provider made this refund, but intake holds no request for it (its database was"
                    " restored from a backup taken before the request, most likely): it is booked against the payment"
                    " and the balance as a refund made at the provider"
                ),
                "what to do": "check it at the provider; the customer's request and its decision are not recorded",
            },
            payment_id=data.payment_id,
            refund_id=data.refund_id,
        ),
        source=INTAKE.source,
    )
