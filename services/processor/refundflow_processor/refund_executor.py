"""Executes scheduled refund attempts at the provider, exactly once per refund.

The attempt row (with its idempotency key) is committed before the provider is called. The executor
locks it, calls the provider with that key, and records the answer in the same transaction, with the
events it causes. A crash anywhere leaves the attempt scheduled: it is retried with the SAME key, and
the provider answers with the refund it already made.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from refundflow_shared.crash_points import crash_point
from refundflow_shared.events import PaymentRefunded, RefundFailed, RefundSucceeded
from refundflow_shared.outbox import add_event
from refundflow_shared.wakeup_loop import run_on_notify

from refundflow_processor import repository
from refundflow_processor.payment_provider import PaymentProvider, ProviderRefund, ProviderRefused, ProviderUnavailable
from refundflow_processor.settings import ProcessorSettings

log = structlog.get_logger(__name__)

SOURCE = "refundflow/processor"
PROVIDER_UNAVAILABLE = "provider_unavailable"


class RefundExecutor:
    def __init__(self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings) -> None:
        self._pool = pool
        self._provider = provider
        self._settings = settings

    async def run(self) -> None:
        await run_on_notify(
            self._pool,
            repository.ATTEMPTS_CHANNEL,
            self.execute_next,
            poll_interval=self._settings.executor_poll_interval_seconds,
            name="refund_executor",
        )

    async def execute_next(self) -> bool:
        """Execute one due attempt; False when none is due."""
        async with self._pool.acquire() as conn, conn.transaction():
            attempt = await repository.claim_due_attempt(conn)
            if attempt is None:
                return False
            structlog.contextvars.bind_contextvars(refund_id=attempt["refund_id"], payment_id=attempt["payment_id"])
            try:
                await self._execute(conn, attempt)
            finally:
                structlog.contextvars.unbind_contextvars("refund_id", "payment_id")
        crash_point("processor.after_outcome_recorded")
        return True

    async def _execute(self, conn: asyncpg.Connection, attempt: dict[str, Any]) -> None:
        crash_point("processor.before_provider_call")
        try:
            result = await self._provider.create_refund(
                payment_ref=attempt["provider_payment_id"],
                amount=attempt["amount"],
                currency=attempt["currency"],
                idempotency_key=attempt["idempotency_key"],
                refund_id=attempt["refund_id"],
            )
        except ProviderRefused as exc:
            log.warning("provider_refused_refund", code=exc.code)
            await self._record_failure(conn, attempt, exc.code, exc.message, provider_refund_id=None)
            return
        except ProviderUnavailable as exc:
            await self._retry_later(conn, attempt, str(exc))
            return
        crash_point("processor.after_provider_answered")
        await self._record(conn, attempt, result)

    async def _retry_later(self, conn: asyncpg.Connection, attempt: dict[str, Any], error: str) -> None:
        tries = attempt["tries"] + 1
        if tries < self._settings.provider_retry_budget:
            delay = min(
                self._settings.provider_retry_max_seconds, self._settings.provider_retry_base_seconds * 2 ** (tries - 1)
            ) * random.uniform(0.5, 1.0)
            log.warning("provider_unavailable_retrying", tries=tries, retry_in=round(delay, 3), error=error)
            next_try = datetime.now(UTC) + timedelta(seconds=delay)
            await repository.reschedule_attempt(conn, attempt["refund_id"], attempt["attempt"], next_try, error)
            return
        # Out of budget. The refund may exist despite the errors: look before declaring it failed.
        try:
            found = await self._provider.find_refund(
                payment_ref=attempt["provider_payment_id"], refund_id=attempt["refund_id"]
            )
        except ProviderUnavailable as exc:
            found = None
            error = f"{error}; reconciliation failed: {exc}"
        if found is not None:
            log.info("provider_refund_reconciled", provider_refund_id=found.id)
            await self._record(conn, attempt, found)
            return
        log.error("provider_retries_exhausted", tries=tries, error=error)
        await self._record_failure(conn, attempt, PROVIDER_UNAVAILABLE, error, provider_refund_id=None)

    async def _record(self, conn: asyncpg.Connection, attempt: dict[str, Any], result: ProviderRefund) -> None:
        if result.status == "pending":
            log.info("provider_refund_pending", provider_refund_id=result.id)
            await repository.finish_attempt(
                conn, attempt["refund_id"], attempt["attempt"], "provider_pending", provider_refund_id=result.id
            )
            return
        if result.status == "failed":
            await self._record_failure(
                conn, attempt, result.failure_reason or "unknown", None, provider_refund_id=result.id
            )
            return
        await repository.finish_attempt(
            conn, attempt["refund_id"], attempt["attempt"], "succeeded", provider_refund_id=result.id
        )
        await repository.finish_refund(conn, attempt["refund_id"], "succeeded", provider_refund_id=result.id)
        refunded = await repository.refunded_total(conn, attempt["payment_id"])
        common = {
            "payment_id": attempt["payment_id"],
            "merchant_id": attempt["merchant_id"],
            "refund_id": attempt["refund_id"],
            "amount": attempt["amount"],
            "currency": attempt["currency"],
        }
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

    async def _record_failure(
        self,
        conn: asyncpg.Connection,
        attempt: dict[str, Any],
        reason: str,
        message: str | None,
        *,
        provider_refund_id: str | None,
    ) -> None:
        await repository.finish_attempt(
            conn,
            attempt["refund_id"],
            attempt["attempt"],
            "failed",
            provider_refund_id=provider_refund_id,
            error=message,
        )
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
                payment_id=attempt["payment_id"],
                merchant_id=attempt["merchant_id"],
                refund_id=attempt["refund_id"],
                customer_email=attempt["customer_email"],
                amount=attempt["amount"],
                currency=attempt["currency"],
                failure_reason=reason,
                failure_message=message,
            ),
            source=SOURCE,
        )
        log.warning("refund_failed", failure_reason=reason)
