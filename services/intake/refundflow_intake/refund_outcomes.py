"""The provider's verdicts on our refunds, reported by the processor: succeeded, failed, and reversed (failed after
it had succeeded). Each finishes the refund, the payment's totals and the merchant's balance in the consumer's
transaction, once."""

from __future__ import annotations

import asyncpg

from refundflow_intake import repository
from refundflow_intake.awaited_events import Awaits, refund_outcome
from refundflow_intake.domain import RefundNotFound, RefundStatus, check_transition
from refundflow_intake.refund_decisions import locked_refund
from refundflow_intake.repository import Row
from refundflow_intake.unrecorded_refunds import record_unrecorded_outcome
from refundflow_shared.events import RefundFailed, RefundReversed, RefundSucceeded


async def record_refund_outcome(conn: asyncpg.Connection, data: RefundSucceeded | RefundFailed, *, actor: str) -> None:
    """Succeeded: the hold becomes a refund for good, and the provider's id of it is kept. Failed: the hold is
    released, the amount refundable again; a refund that had succeeded is reversed, once (after a restore of the
    processor, it adopts its refund as the provider has it now and cannot know we were told of its success). A
    refund intake does not hold (after a restore of intake) is booked from the event itself."""
    refund_id = data.refund_id
    succeeded = isinstance(data, RefundSucceeded)
    outcome = RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED
    failure_reason = None if isinstance(data, RefundSucceeded) else data.failure_reason
    try:
        refund, _ = await locked_refund(conn, refund_id, data.merchant_id)
    except RefundNotFound:
        await record_unrecorded_outcome(conn, data)
        return
    if outcome is RefundStatus.FAILED and refund["status"] in (RefundStatus.SUCCEEDED, RefundStatus.REVERSED):
        await _reverse(conn, refund, failure_reason, None, None, actor=actor)
        return
    if not check_transition(RefundStatus(refund["status"]), outcome):
        return
    audit = repository.Audit(actor, failure_reason)
    # The hold is released; on success the refund is debited for good.
    entries = [("refund_release", refund_id, refund), *([("refund", refund_id, refund)] if succeeded else [])]
    await repository.update_refund_status(
        conn,
        refund_id,
        outcome,
        audit,
        failure_reason=failure_reason,
        provider_refund_id=data.provider_refund_id if isinstance(data, RefundSucceeded) else None,
        refunded=refund["amount"] if succeeded else 0,
        entries=entries,
    )


async def record_reversal(conn: asyncpg.Connection, data: RefundReversed, *, actor: str) -> None:
    """The money did not reach the customer after all: the payment's refunded amount and the balance come back,
    and the timeline says why."""
    try:
        refund, _ = await locked_refund(conn, data.refund_id, data.merchant_id)
    except RefundNotFound:
        await record_unrecorded_outcome(conn, data)
        return
    status = RefundStatus(refund["status"])
    if status is RefundStatus.PROCESSING:
        # refund.succeeded travels on another topic and may not be handled yet: applied once it is.
        raise Awaits(
            refund_outcome(data.refund_id), f"refund {data.refund_id} is reversed before its success was recorded"
        )
    await _reverse(conn, refund, data.failure_reason, data.failure_message, data.provider_refund_id, actor=actor)


async def _reverse(
    conn: asyncpg.Connection,
    refund: Row,
    failure_reason: str | None,
    failure_message: str | None,
    provider_refund_id: str | None,
    *,
    actor: str,
) -> None:
    if not check_transition(RefundStatus(refund["status"]), RefundStatus.REVERSED):
        return
    why = f"the provider failed the refund after it had succeeded: {failure_reason}"
    if failure_message:
        why += f" ({failure_message})"
    audit = repository.Audit(actor, why, action="reversed")
    await repository.update_refund_status(
        conn,
        refund["id"],
        RefundStatus.REVERSED,
        audit,
        failure_reason=failure_reason,
        provider_refund_id=provider_refund_id,
        refunded=-refund["amount"],
        entries=[("refund_reversal", refund["id"], refund)],
    )
