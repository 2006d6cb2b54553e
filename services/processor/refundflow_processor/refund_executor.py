"""Executes scheduled refund attempts at the provider, exactly once per refund.

The attempt row (with its idempotency key) is committed before the provider is called. The executor
locks it, calls the provider with that key, and records the answer in the same transaction, with the
events it causes. A crash anywhere leaves the attempt scheduled: it is retried with the SAME key, and
the provider answers with the refund it already made.

| provider's answer                  | what happens                                                       |
|------------------------------------|--------------------------------------------------------------------|
| refund succeeded / failed          | recorded, refund.succeeded + payment.refunded / refund.failed      |
| refund pending                     | attempt provider_pending; webhook or sync job finishes it          |
| 4xx refusal                        | refund.failed (provider_refused) with the provider's message       |
| network error, timeout, 409, 429   | same key again later (exponential backoff with jitter)             |
| 5xx (replayed for the same key)    | same key again; after N in a row reconcile: adopt our refund if it |
|                                    | exists, else abandon the key and schedule attempt n + 1            |
| key older than its lifetime        | reconcile before calling again                                     |
| retry budget spent                 | reconcile; if no refund: refund.failed provider_unavailable + alert|
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from refundflow_processor import repository
from refundflow_processor.payment_provider import PaymentProvider, ProviderRefused, ProviderUnavailable, find_refund
from refundflow_processor.refund_outcomes import (
    PROVIDER_REFUSED,
    Attempt,
    record_failure,
    record_provider_refund,
    record_provider_unavailable,
)
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.crash_points import crash_point
from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)


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
        failed: Attempt | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            attempt = await repository.claim_due_attempt(conn)
            if attempt is None:
                return False
            structlog.contextvars.bind_contextvars(refund_id=attempt["refund_id"], payment_id=attempt["payment_id"])
            try:
                async with conn.transaction():  # a savepoint: a failure undoes only this attempt's writes
                    await self._execute(conn, attempt)
            except asyncio.CancelledError:
                raise
            except Exception:  # one refund's bug must not stop every other refund
                log.exception("refund_attempt_crashed")
                failed = attempt
            finally:
                structlog.contextvars.unbind_contextvars("refund_id", "payment_id")
            if failed is not None:
                # The same key, later: whatever the provider did is replayed, so nothing is done twice.
                await self._retry_later(conn, failed, "internal error, see logs", server_error=False)
        crash_point("processor.after_outcome_recorded")
        return True

    async def _execute(self, conn: asyncpg.Connection, attempt: Attempt) -> None:
        crash_point("processor.before_provider_call")
        key_age = datetime.now(UTC) - attempt["attempt_created_at"]
        if attempt["tries"] and key_age.total_seconds() > self._settings.provider_key_lifetime_seconds:
            log.info("idempotency_key_expired_reconciling", key_age_seconds=int(key_age.total_seconds()))
            await self._reconcile_or_new_key(conn, attempt, "the idempotency key outlived its lifetime")
            return
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
            await record_failure(conn, attempt, PROVIDER_REFUSED, str(exc), provider_refund_id=None)
            return
        except ProviderUnavailable as exc:
            await self._after_no_answer(conn, attempt, exc)
            return
        crash_point("processor.after_provider_answered")
        await record_provider_refund(conn, attempt, result)

    async def _after_no_answer(self, conn: asyncpg.Connection, attempt: Attempt, exc: ProviderUnavailable) -> None:
        calls = await repository.count_provider_call(conn, attempt["refund_id"])
        error = str(exc)
        if calls >= self._settings.provider_retry_budget:
            await self._give_up(conn, attempt, error)
        elif (
            exc.server_error and attempt["server_errors"] + 1 >= self._settings.provider_server_errors_before_reconcile
        ):
            await self._reconcile_or_new_key(conn, attempt, error)
        else:
            await self._retry_later(conn, attempt, error, server_error=exc.server_error)

    async def _retry_later(self, conn: asyncpg.Connection, attempt: Attempt, error: str, *, server_error: bool) -> None:
        delay = self._backoff(attempt["tries"] + 1)
        log.warning("provider_unavailable_retrying", tries=attempt["tries"] + 1, retry_in=round(delay, 3), error=error)
        next_try = datetime.now(UTC) + timedelta(seconds=delay)
        await repository.reschedule_attempt(conn, attempt, next_try, error, server_error=server_error)

    async def _reconcile_or_new_key(self, conn: asyncpg.Connection, attempt: Attempt, error: str) -> None:
        """Adopt our refund if the provider has it; only when it provably does not, move to a new key."""
        try:
            found = await find_refund(self._provider, attempt["provider_payment_id"], attempt["refund_id"])
        except ProviderUnavailable as exc:
            await self._retry_later(conn, attempt, f"{error}; reconciliation failed: {exc}", server_error=False)
            return
        if found is not None:
            log.info("provider_refund_reconciled", provider_refund_id=found.id)
            await record_provider_refund(conn, attempt, found)
            return
        log.warning("idempotency_key_abandoned", attempt=attempt["attempt"], error=error)
        await repository.set_attempt_state(conn, attempt, "abandoned", error=error)
        next_try = datetime.now(UTC) + timedelta(seconds=self._backoff(1))
        await repository.schedule_attempt(conn, attempt["refund_id"], attempt["attempt"] + 1, next_try)

    async def _give_up(self, conn: asyncpg.Connection, attempt: Attempt, error: str) -> None:
        # The refund may exist despite the errors: look before declaring it failed.
        try:
            found = await find_refund(self._provider, attempt["provider_payment_id"], attempt["refund_id"])
        except ProviderUnavailable as exc:
            found, error = None, f"{error}; reconciliation failed: {exc}"
        if found is not None:
            log.info("provider_refund_reconciled", provider_refund_id=found.id)
            await record_provider_refund(conn, attempt, found)
            return
        log.error("provider_retries_exhausted", calls=attempt["provider_calls"] + 1, error=error)
        await record_provider_unavailable(conn, attempt, self._provider.name, error)

    def _backoff(self, tries: int) -> float:
        s = self._settings
        capped = min(s.provider_retry_max_seconds, s.provider_retry_base_seconds * 2 ** (tries - 1))
        return float(capped) * random.uniform(0.5, 1.0)
