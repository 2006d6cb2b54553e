"""Writing a step's outcome, with the events it causes, in the caller's transaction (attempt already locked).

The executor, the provider's webhook and the sync job all come here: whichever reports an outcome first
records it; the others find the attempt moved on, and ``next_step`` tells them to do nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from refundflow_processor import payment_repository, repository
from refundflow_processor.attempts import (
    PROVIDER_UNAVAILABLE,
    AttemptState,
    AwaitProvider,
    CallLater,
    Fail,
    GiveUp,
    Ignore,
    NewKey,
    RetryAt,
    Reverse,
    StartOver,
    Step,
    Succeed,
    Unknown,
)
from refundflow_processor.payment_provider import ProviderRefund, normalise_failure_reason
from refundflow_processor.records import Attempt, Refund, RefundStatus
from refundflow_processor.team_alerts import raise_alert
from refundflow_shared.backoff import jittered
from refundflow_shared.event_contract import PROCESSOR
from refundflow_shared.events import (
    NOTE_MAX_LENGTH,
    PaymentRefunded,
    ProviderUnavailable,
    RefundFailed,
    RefundReversed,
    RefundSucceeded,
    carry,
)
from refundflow_shared.outbox import add_event, add_events

log = structlog.get_logger(__name__)


async def apply_step(conn: asyncpg.Connection, attempt: Attempt, step: Step, *, provider: str) -> None:
    """Record what ``step`` decided about ``attempt``. The executor runs CallProvider, Reconcile, PauseCalls."""
    if not isinstance(step, Ignore):  # the scan looks soon at what the provider now holds (a duplicate, say)
        await payment_repository.scan_payment_soon(conn, attempt.refund.payment_id)
    match step:
        case Succeed(refund):
            await _record_success(conn, attempt, refund)
        case AwaitProvider(refund):
            log.info("provider_refund_pending", provider_refund_id=refund.id)
            await repository.record_attempt_state(
                conn, attempt, AttemptState.PROVIDER_PENDING, provider_refund_id=refund.id
            )
        case Fail(reason, message, provider_refund_id):
            await record_failure(conn, attempt, reason, message, provider_refund_id=provider_refund_id)
        case GiveUp(error):
            await _record_provider_unavailable(conn, attempt, provider, error)
        case RetryAt(delay, error, server_error):
            log.warning("provider_no_answer_retrying", tries=attempt.tries + 1, error=error)
            await repository.record_no_answer(conn, attempt, jittered(delay), error, server_error=server_error)
        case CallLater(delay, at_least, error, alert):
            await _record_not_executed(conn, attempt, max(jittered(delay), at_least), error, alert=alert)
        case NewKey(delay, error):
            log.warning("idempotency_key_abandoned", attempt=attempt.number, error=error)
            await repository.record_attempt_state(conn, attempt, AttemptState.ABANDONED, error=error)
            await repository.schedule_attempt(conn, attempt.refund.refund_id, attempt.number + 1, jittered(delay))
        case StartOver(delay, error):
            # No alert: an outage's alerts (refund_outcome_unknown) are raised once per refund, not per cycle.
            log.warning("provider_outage_starting_over", attempt=attempt.number, error=error)
            await repository.record_attempt_state(conn, attempt, AttemptState.ABANDONED, error=error)
            await repository.restore_retry_budget(conn, attempt.refund.refund_id)
            await repository.schedule_attempt(conn, attempt.refund.refund_id, attempt.number + 1, jittered(delay))
        case Unknown(delay, error, alert, mismatched_refund_id):
            await _record_unknown(conn, attempt, jittered(delay), error, alert, mismatched_refund_id)
        case Reverse(refund):
            await _record_reversal(conn, attempt.refund, refund)
        case Ignore(why):
            log.info("provider_update_ignored", why=why)
        case _:
            raise AssertionError(f"{step!r} is not an outcome")


async def _record_success(conn: asyncpg.Connection, attempt: Attempt, result: ProviderRefund) -> None:
    refund = attempt.refund
    refunded = await repository.record_success(conn, attempt, result.id)
    succeeded = RefundSucceeded(
        **_refund_fields(refund),
        **carry(refund.to_customer, RefundSucceeded),
        customer_email=refund.customer_email,
        provider_refund_id=result.id,
    )
    payment_refunded = PaymentRefunded(
        **_refund_fields(refund), refunded_amount=refunded, remaining_amount=max(refund.payment_amount - refunded, 0)
    )
    await add_events(conn, [succeeded, payment_refunded], source=PROCESSOR.source)
    log.info("refund_succeeded", provider_refund_id=result.id)


async def record_failure(
    conn: asyncpg.Connection, attempt: Attempt, reason: str, message: str | None, *, provider_refund_id: str | None
) -> None:
    """A definite failure: the refund is failed and the customer's money did not move."""
    await repository.record_attempt_state(
        conn, attempt, AttemptState.FAILED, provider_refund_id=provider_refund_id, error=message
    )
    await repository.finish_refund(
        conn,
        attempt.refund.refund_id,
        RefundStatus.FAILED,
        provider_refund_id=provider_refund_id,
        failure_reason=reason,
        failure_message=message,
    )
    await publish_failure(conn, attempt.refund, reason, message)


async def publish_failure(conn: asyncpg.Connection, refund: Refund, reason: str, message: str | None) -> None:
    await add_event(
        conn,
        RefundFailed(
            **_refund_fields(refund),
            **carry(refund.to_customer, RefundFailed),
            customer_email=refund.customer_email,
            failure_reason=reason,
            failure_message=message[:NOTE_MAX_LENGTH] if message else None,
        ),
        source=PROCESSOR.source,
    )
    log.warning("refund_failed", failure_reason=reason)


async def _record_provider_unavailable(conn: asyncpg.Connection, attempt: Attempt, provider: str, error: str) -> None:
    """Out of budget past the outage window, and the provider proved to hold no refund of ours: fail it, and alert
    the team."""
    log.error("provider_retries_exhausted", calls=attempt.refund.provider_calls, error=error)
    await record_failure(conn, attempt, PROVIDER_UNAVAILABLE, error, provider_refund_id=None)
    await add_event(
        conn,
        ProviderUnavailable(
            payment_id=attempt.refund.payment_id,
            merchant_id=attempt.refund.merchant_id,
            refund_id=attempt.refund.refund_id,
            provider=provider,
            attempts=attempt.refund.provider_calls,
            last_error=error[:NOTE_MAX_LENGTH],
        ),
        source=PROCESSOR.source,
    )


async def _record_not_executed(
    conn: asyncpg.Connection, attempt: Attempt, delay: float, error: str, *, alert: bool
) -> None:
    """The provider deferred the call, or the listing that looks for the refund (rate limited): the same question
    later, no call counted. A throttle that never ends leaves the refund processing; the team hears of it once."""
    refund = attempt.refund
    log.warning("provider_not_executed_retrying", tries=attempt.tries + 1, error=error, retry_in=round(delay, 3))
    await repository.record_not_executed(conn, attempt, delay, error)
    if alert and await repository.note_not_executed_alert(conn, refund.refund_id):
        log.error("provider_not_executing", since=str(attempt.not_executed_since), error=error)
        await raise_alert(
            conn,
            merchant_id=refund.merchant_id,
            kind="provider_not_executing",
            title="The payment provider keeps deferring a refund's call (rate limited); it stays processing",
            details={
                "error": error,
                "since": str(attempt.not_executed_since),
                "effect": "the provider is asked again (for the refund, with the same key, or for the payment's"
                " refunds, to find it) as long as it defers the call",
            },
            payment_id=refund.payment_id,
            refund_id=refund.refund_id,
        )


async def _record_unknown(
    conn: asyncpg.Connection, attempt: Attempt, delay: float, error: str, alert: str, mismatched_refund_id: str | None
) -> None:
    refund = attempt.refund
    log.error("refund_outcome_unknown", error=error, alert=alert, reconcile_in=round(delay, 3))
    await repository.record_unknown(conn, attempt, delay, error, mismatched_refund_id=mismatched_refund_id)
    if await repository.note_outcome_unknown_alert(conn, refund.refund_id):
        await raise_alert(
            conn,
            merchant_id=refund.merchant_id,
            kind=alert,
            title="A refund's outcome at the payment provider is unknown; it stays processing",
            details={
                "error": error,
                "effect": "no new refund is made; the provider is asked again until it answers",
                "idempotency_key": attempt.idempotency_key,
            },
            payment_id=refund.payment_id,
            refund_id=refund.refund_id,
        )


async def _record_reversal(conn: asyncpg.Connection, refund: Refund, result: ProviderRefund) -> None:
    reason = normalise_failure_reason(result.failure_reason)
    # The provider's text is quoted, so cut to the contract's bound: too long, the reversal could never be recorded.
    message = f"provider: the refund failed after it had succeeded ({result.failure_reason})"[:NOTE_MAX_LENGTH]
    if not await repository.reverse_refund(conn, refund.refund_id, reason, message):
        return
    await add_event(
        conn,
        RefundReversed(
            **_refund_fields(refund),
            **carry(refund.to_customer, RefundReversed),
            customer_email=refund.customer_email,
            provider_refund_id=result.id,
            failure_reason=reason,
            failure_message=message,
        ),
        source=PROCESSOR.source,
    )
    log.error("refund_reversed", provider_refund_id=result.id, failure_reason=reason)


def _refund_fields(refund: Refund) -> dict[str, Any]:
    return {
        "payment_id": refund.payment_id,
        "merchant_id": refund.merchant_id,
        "refund_id": refund.refund_id,
        "amount": refund.amount,
        "currency": refund.currency,
    }
