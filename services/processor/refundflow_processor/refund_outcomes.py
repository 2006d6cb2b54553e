"""Recording what the provider said about a refund, with the events it causes, in the caller's transaction.

Used by the executor (the provider's answer), the provider's webhook and the sync job: whichever reports a
pending refund's outcome first records it; the others find the attempt no longer pending and do nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from refundflow_processor import repository
from refundflow_processor.payment_provider import ProviderRefund, normalise_failure_reason
from refundflow_shared.events import PaymentRefunded, ProviderUnavailable, RefundFailed, RefundSucceeded
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)

SOURCE = "refundflow/processor"
PROVIDER_UNAVAILABLE = "provider_unavailable"
PROVIDER_REFUSED = "provider_refused"

Attempt = dict[str, Any]


async def record_provider_refund(conn: asyncpg.Connection, attempt: Attempt, result: ProviderRefund) -> None:
    if result.status == "pending":
        log.info("provider_refund_pending", provider_refund_id=result.id)
        await repository.set_attempt_state(conn, attempt, "provider_pending", provider_refund_id=result.id)
    elif result.status == "failed":
        await record_failure(
            conn,
            attempt,
            normalise_failure_reason(result.failure_reason),
            f"provider: {result.failure_reason}",
            provider_refund_id=result.id,
        )
    else:
        await _record_success(conn, attempt, result)


async def complete_pending(conn: asyncpg.Connection, result: ProviderRefund) -> bool:
    """A pending provider refund changed (webhook or sync job); True if this call recorded the outcome."""
    attempt = await repository.lock_pending_attempt(conn, result.id)
    if attempt is None or result.status == "pending":
        return False
    structlog.contextvars.bind_contextvars(refund_id=attempt["refund_id"], payment_id=attempt["payment_id"])
    await record_provider_refund(conn, attempt, result)
    return True


async def _record_success(conn: asyncpg.Connection, attempt: Attempt, result: ProviderRefund) -> None:
    await repository.set_attempt_state(conn, attempt, "succeeded", provider_refund_id=result.id)
    await repository.finish_refund(conn, attempt["refund_id"], "succeeded", provider_refund_id=result.id)
    refunded = await repository.refunded_total(conn, attempt["payment_id"])
    common = _refund_fields(attempt)
    await add_event(
        conn,
        RefundSucceeded(**common, customer_email=attempt["customer_email"], provider_refund_id=result.id),
        source=SOURCE,
    )
    await add_event(
        conn,
        PaymentRefunded(
            **common, refunded_amount=refunded, remaining_amount=max(attempt["payment_amount"] - refunded, 0)
        ),
        source=SOURCE,
    )
    log.info("refund_succeeded", provider_refund_id=result.id)


async def record_failure(
    conn: asyncpg.Connection, attempt: Attempt, reason: str, message: str | None, *, provider_refund_id: str | None
) -> None:
    """A definite failure: the refund is failed and the customer's money did not move."""
    await repository.set_attempt_state(conn, attempt, "failed", provider_refund_id=provider_refund_id, error=message)
    await repository.finish_refund(
        conn,
        attempt["refund_id"],
        "failed",
        provider_refund_id=provider_refund_id,
        failure_reason=reason,
        failure_message=message,
    )
    await add_event(
        conn,
        RefundFailed(
            **_refund_fields(attempt),
            customer_email=attempt["customer_email"],
            failure_reason=reason,
            failure_message=message,
        ),
        source=SOURCE,
    )
    log.warning("refund_failed", failure_reason=reason)


async def record_provider_unavailable(
    conn: asyncpg.Connection, attempt: Attempt, provider: str, last_error: str
) -> None:
    """Out of retry budget and no refund at the provider: fail it, and alert the merchant's team."""
    await record_failure(conn, attempt, PROVIDER_UNAVAILABLE, last_error, provider_refund_id=None)
    await add_event(
        conn,
        ProviderUnavailable(
            payment_id=attempt["payment_id"],
            merchant_id=attempt["merchant_id"],
            refund_id=attempt["refund_id"],
            provider=provider,
            attempts=attempt["provider_calls"] + 1,
            last_error=last_error[:500],
        ),
        source=SOURCE,
    )


def _refund_fields(attempt: Attempt) -> dict[str, Any]:
    return {
        "payment_id": attempt["payment_id"],
        "merchant_id": attempt["merchant_id"],
        "refund_id": attempt["refund_id"],
        "amount": attempt["amount"],
        "currency": attempt["currency"],
    }
