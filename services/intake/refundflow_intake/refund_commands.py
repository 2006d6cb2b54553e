"""The ``refund.submit`` command from other platform services: a refund request, or a reasoned refusal."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from refundflow_intake import repository
from refundflow_intake.awaited_events import Awaits, payment_registered
from refundflow_intake.domain import (
    Channel,
    DomainError,
    InvalidProration,
    MerchantNotFound,
    PaymentNotFound,
    RefundReason,
    holds_control_characters,
)
from refundflow_intake.merchant_accounts import merchant_exists
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.refund_requests import Proration, request_refund_once
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import CLOCK_SKEW, NOTE_MAX_LENGTH, Event, RefundSubmit, RefundSubmitRejected
from refundflow_shared.outbox import add_event


class InvalidReason(DomainError):
    code = "invalid_reason"


class InvalidText(DomainError):
    """Text with a control character (``domain.holds_control_characters``), a NUL among them, which PostgreSQL cannot
    store: refused before the database fails on it, so it is answered."""

    code = "invalid_text"
    in_api = False  # the API answers such text as invalid_request (api/errors.py)


# The command's text that is stored. Its payment id is not among them: it keys the answer too, so a command whose
# payment id cannot be stored cannot be answered either, only dead-lettered.
_STORED_TEXT = ("merchant_id", "idempotency_key", "reason_details", "submitted_by")


def _check_storable(data: RefundSubmit) -> None:
    for field in _STORED_TEXT:
        value = getattr(data, field)
        if value is not None and holds_control_characters(value):
            raise InvalidText(f"{field} holds a control character (a NUL cannot be stored)")


def _reason(value: str) -> RefundReason:
    try:
        return RefundReason(value)
    except ValueError:
        raise InvalidReason(f"{value!r} is not a refund reason: one of {', '.join(RefundReason)}") from None


def _proration(data: RefundSubmit) -> Proration | None:
    given = data.proration
    if given is None:
        return None
    if (given.unused_days is None) == (given.affected_days is None):
        raise InvalidProration("give exactly one of proration.unused_days and proration.affected_days")
    days = given.unused_days if given.unused_days is not None else given.affected_days
    assert days is not None
    return Proration(days=days, period_days=given.period_days)


def asked_at(sent_at: datetime, received_at: datetime, *, awaited_wait: timedelta) -> datetime:
    """When a command's request is judged against the refund window: when it was sent (its CloudEvents ``time``),
    not when intake applies it, after waiting for its payment, behind consumer lag or replayed from the DLQ.

    The sender writes that time, so it is trusted within bounds: never after it was received, nor before the
    longest wait intake gives a command (and clock skew). Backdating gains a publisher minutes at most; a
    replay days later is judged as of then, less that margin.
    """
    earliest = received_at - awaited_wait - CLOCK_SKEW
    return max(earliest, min(sent_at, received_at))


async def submit_refund(
    conn: asyncpg.Connection,
    event: Event,
    data: RefundSubmit,
    *,
    now: datetime,
    awaited_wait: timedelta,
    waited: bool,
    links: CustomerLinks,
) -> RefundSubmitRejected | None:
    """Create the request (once per idempotency key), or stage ``refund.submit_rejected`` and return it. The
    request is judged as asked when the command was sent (``asked_at``), ``awaited_wait`` the longest it may wait.

    A payment intake does not know yet may still be on its way (billing's ``payment.succeeded`` travels on
    another topic): until the command has ``waited`` for it, that is no refusal: it ``Awaits`` the payment.
    A refused command leaves nothing behind but its answer: its work runs in a savepoint that is rolled back.
    """
    try:
        _check_storable(data)
        async with conn.transaction():
            if not await merchant_exists(conn, data.merchant_id):
                raise MerchantNotFound(f"no merchant {data.merchant_id}")
            # The platform may name a payment registered through the API by billing's own id for it.
            payment_id = await repository.payment_of_alias(conn, data.merchant_id, data.payment_id) or data.payment_id
            await request_refund_once(
                conn,
                data.merchant_id,
                data.idempotency_key,
                data.model_dump(mode="json"),
                payment_id=payment_id,
                reason=_reason(data.reason),
                reason_details=data.reason_details,
                amount=data.amount,
                proration=_proration(data),
                currency=data.currency,
                actor=f"service:{data.submitted_by or event.source}",
                now=now,
                asked_at=asked_at(event.time, now, awaited_wait=awaited_wait),
                links=links,
                channel=Channel.COMMAND,
            )
            return None
    except PaymentNotFound as unknown:
        if not waited:
            raise Awaits(payment_registered(data.merchant_id, data.payment_id), unknown.message) from None
        refused: DomainError = unknown
    except DomainError as error:
        refused = error
    rejected = RefundSubmitRejected(
        payment_id=data.payment_id,
        merchant_id=data.merchant_id,
        idempotency_key=data.idempotency_key,
        code=refused.code,
        message=refused.message[:NOTE_MAX_LENGTH],  # the answer's limit: a refusal always fits its answer
    )
    await add_event(conn, rejected, source=INTAKE.source)
    return rejected


def refusal_codes() -> set[str]:
    """Every code a refused command may be answered (and parked) with: a rule's, any of intake's."""
    codes: set[str] = set()
    errors: list[type[DomainError]] = [DomainError]
    while errors:
        error = errors.pop()
        codes.add(error.code)
        errors.extend(error.__subclasses__())
    return codes
