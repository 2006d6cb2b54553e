"""The ``refund.submit`` command from other platform services: a refund request, or a reasoned refusal."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from refundflow_intake import idempotency, refund_desk, repository
from refundflow_intake.domain import Channel, DomainError, InvalidProration, MerchantNotFound, RefundReason
from refundflow_shared.events import Event, RefundSubmit, RefundSubmitRejected
from refundflow_shared.outbox import add_event


class InvalidReason(DomainError):
    code = "invalid_reason"


def _reason(value: str) -> RefundReason:
    try:
        return RefundReason(value)
    except ValueError:
        raise InvalidReason(f"{value!r} is not a refund reason: one of {', '.join(RefundReason)}") from None


def _proration(data: RefundSubmit) -> refund_desk.Proration | None:
    given = data.proration
    if given is None:
        return None
    if (given.unused_days is None) == (given.affected_days is None):
        raise InvalidProration("give exactly one of proration.unused_days and proration.affected_days")
    days = given.unused_days if given.unused_days is not None else given.affected_days
    assert days is not None
    return refund_desk.Proration(days=days, period_days=given.period_days)


async def submit_refund(
    conn: asyncpg.Connection, event: Event, data: RefundSubmit, *, now: datetime
) -> RefundSubmitRejected | None:
    """Create the request (once per idempotency key), or stage ``refund.submit_rejected`` and return it.

    A refused command leaves nothing behind but its answer: its work runs in a savepoint that is rolled back.
    """
    try:
        async with conn.transaction():
            if not await repository.merchant_exists(conn, data.merchant_id):
                raise MerchantNotFound(f"no merchant {data.merchant_id}")
            key = f"refund.submit:{data.idempotency_key}"
            request_hash = idempotency.fingerprint(data.model_dump(mode="json"))
            if await idempotency.claim(conn, data.merchant_id, key, request_hash) is not None:
                return None  # sent again: the first one's refund stands
            refund = await refund_desk.request_refund(
                conn,
                data.merchant_id,
                payment_id=data.payment_id,
                reason=_reason(data.reason),
                reason_details=data.reason_details,
                amount=data.amount,
                proration=_proration(data),
                currency=data.currency,
                actor=f"service:{data.submitted_by or event.source}",
                now=now,
                channel=Channel.COMMAND,
            )
            await idempotency.remember(conn, data.merchant_id, key, refund["id"])
            return None
    except DomainError as refused:
        rejected = RefundSubmitRejected(
            payment_id=data.payment_id,
            merchant_id=data.merchant_id,
            idempotency_key=data.idempotency_key,
            code=refused.code,
            message=refused.message,
        )
        await add_event(conn, rejected, source=refund_desk.SOURCE)
        return rejected
