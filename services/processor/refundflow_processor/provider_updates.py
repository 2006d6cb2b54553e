"""What the provider reports on its own about a refund (signed webhook, or the sync job asking)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import structlog

from refundflow_processor import repository
from refundflow_processor.attempts import AttemptPolicy, Ignore, Updated, next_step
from refundflow_processor.external_refunds import record_external_update
from refundflow_processor.payment_provider import ProviderRefund
from refundflow_processor.refund_outcomes import apply_step

log = structlog.get_logger(__name__)


class RefundInFlight(Exception):
    """The report is about our refund, whose attempt has not recorded the provider's refund yet (the call that made
    it got no answer): it can be recorded once the executor has, so it must be reported again."""


async def apply_provider_update(
    conn: asyncpg.Connection, reported: ProviderRefund, *, policy: AttemptPolicy, provider: str
) -> bool:
    """Record a pending refund's verdict, a reversal, or an external refund's new status; True if it did. Raises
    ``RefundInFlight`` for a refund of ours that its attempt has not recorded yet."""
    attempt = await repository.lock_attempt_of_provider_refund(conn, reported.id)
    if attempt is None:
        if reported.refund_id is not None and await repository.refund_in_flight(conn, reported.refund_id, reported.id):
            raise RefundInFlight(f"refund {reported.refund_id} has not recorded {reported.id} yet")
        return await record_external_update(conn, reported)
    structlog.contextvars.bind_contextvars(refund_id=attempt.refund.refund_id, payment_id=attempt.refund.payment_id)
    try:
        step = next_step(attempt, Updated(reported), now=datetime.now(UTC), policy=policy)
        await apply_step(conn, attempt, step, provider=provider)
    finally:
        structlog.contextvars.unbind_contextvars("refund_id", "payment_id")
    return not isinstance(step, Ignore)
