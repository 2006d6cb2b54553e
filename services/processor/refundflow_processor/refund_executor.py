"""Executes refund attempts: a small interpreter of ``attempts.next_step`` on a lease-based dispatcher.

Per attempt, one turn: claim it (short transaction, lease), ask the provider one question with no
transaction or lock held (call with the attempt's key, or reconcile), then record the answer's step in a
second short transaction that holds only if our lease still does (shared with the attempts answered meanwhile:
``GroupCommit``). The key was committed before the first call, so a repeated call (a crash, an expired lease) is
replayed by the provider, never executed twice.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from opentelemetry.trace import SpanKind

from refundflow_processor import repository
from refundflow_processor.attempts import (
    Answered,
    AttemptPolicy,
    AuthFailed,
    CallProvider,
    NoAnswer,
    NotExecuted,
    PauseCalls,
    ProviderAnswer,
    Reconcile,
    Reconciled,
    ReconcileFailed,
    RecordedForAnother,
    Refused,
    Step,
    next_step,
)
from refundflow_processor.payment_provider import (
    PaymentProvider,
    ProviderAuthFailed,
    ProviderNotExecuted,
    ProviderRefused,
    ProviderUnavailable,
    find_refund,
)
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.records import Attempt
from refundflow_processor.refund_outcomes import apply_step
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.team_alerts import end_auth_episode, raise_auth_alert_once
from refundflow_shared import tracing
from refundflow_shared.crash_points import crash_point
from refundflow_shared.group_commit import GroupCommit
from refundflow_shared.lease_dispatcher import LeaseDispatcher

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Outcome:
    """An answered attempt's step, to record; with the context it was answered in (its trace and log ids)."""

    attempt: Attempt
    step: Step
    definite: bool  # the provider answered: its key works
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class RefundExecutor:
    def __init__(
        self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings, pause: ProviderPause
    ) -> None:
        self._pool, self._provider, self._settings, self._pause = pool, provider, settings, pause
        self._policy = AttemptPolicy.from_settings(settings)
        self._outcomes: GroupCommit[_Outcome] = GroupCommit(self._record_all)
        self.dispatcher: LeaseDispatcher[Attempt, str] = LeaseDispatcher(
            pool,
            channel=repository.ATTEMPTS_CHANNEL,
            claim=self._claim,
            key=lambda attempt: attempt.refund.refund_id,
            work=self.execute,
            max_in_flight=settings.executor_max_in_flight,
            poll_interval=settings.executor_poll_interval_seconds,
            paused=pause.remaining,
            name="refund_executor",
        )

    async def run(self) -> None:
        await self.dispatcher.run()

    async def _claim(self, limit: int, busy: list[str]) -> list[Attempt]:
        async with self._pool.acquire() as conn:
            return await repository.claim_due_attempts(conn, limit, self._settings.executor_lease_seconds, busy)

    async def execute(self, attempt: Attempt) -> None:
        """One turn of one leased attempt."""
        structlog.contextvars.bind_contextvars(refund_id=attempt.refund.refund_id, payment_id=attempt.refund.payment_id)
        try:
            # The turn continues the approval's trace: the provider call and the outcome's events join it.
            with tracing.span("refund attempt", traceparent=attempt.traceparent, continues=True):
                question = next_step(attempt, None, now=datetime.now(UTC), policy=self._policy)
                crash_point("processor.before_provider_call")
                call = "reconcile" if isinstance(question, Reconcile) else "create_refund"
                with tracing.span(f"{self._provider.name} {call}", kind=SpanKind.CLIENT) as span:
                    answer = await self._ask(attempt, question)
                    span.set_attribute("refundflow.provider_answer", type(answer).__name__)
                crash_point("processor.after_provider_answered")
                await self._record(attempt, answer)
        except asyncio.CancelledError:
            raise
        except Exception:  # one refund's bug must not stop the others; its lease brings it back, same key
            log.exception("refund_attempt_crashed")
            await self._give_back(attempt)
        finally:
            structlog.contextvars.unbind_contextvars("refund_id", "payment_id")
        crash_point("processor.after_outcome_recorded")

    async def _ask(self, attempt: Attempt, question: Step) -> ProviderAnswer:
        """Ask the provider one question, within the call deadline (the lease outlives it)."""
        refund = attempt.refund
        try:
            async with asyncio.timeout(self._settings.provider_call_deadline_seconds):
                if isinstance(question, Reconcile):
                    log.info("reconciling", why=question.why)
                    try:
                        return Reconciled(
                            await find_refund(self._provider, refund.provider_payment_id, refund.refund_id)
                        )
                    except ProviderNotExecuted:
                        raise  # a throttled listing is deferred as a throttled call is (below): nothing was learnt
                    except (ProviderUnavailable, ProviderRefused) as exc:
                        return ReconcileFailed(str(exc))
                assert isinstance(question, CallProvider)
                return Answered(
                    await self._provider.create_refund(
                        payment_ref=refund.provider_payment_id,
                        amount=refund.amount,
                        currency=refund.currency,
                        idempotency_key=attempt.idempotency_key,
                        refund_id=refund.refund_id,
                    )
                )
        except TimeoutError:
            error = f"no answer within {self._settings.provider_call_deadline_seconds} s"
            return ReconcileFailed(error) if isinstance(question, Reconcile) else NoAnswer(error)
        except ProviderAuthFailed as exc:
            return AuthFailed(str(exc))
        except ProviderRefused as exc:
            return Refused(exc.code, exc.message)
        except ProviderNotExecuted as exc:
            return NotExecuted(str(exc), exc.retry_after)
        except ProviderUnavailable as exc:
            return NoAnswer(str(exc), server_error=exc.server_error)

    async def _record(self, attempt: Attempt, answer: ProviderAnswer) -> None:
        step = next_step(attempt, answer, now=datetime.now(UTC), policy=self._policy)
        if isinstance(step, PauseCalls):
            await self._pause_calls(attempt, step.error)
            return
        await self._outcomes.write(
            _Outcome(attempt, step, definite=not isinstance(answer, NoAnswer | NotExecuted | ReconcileFailed))
        )

    async def _record_all(self, outcomes: list[_Outcome]) -> None:
        """Record the outcomes in one transaction, in payment order (the lock order of every such transaction)."""
        ends_episode = self._pause.in_episode and any(outcome.definite for outcome in outcomes)
        async with self._pool.acquire() as conn, conn.transaction():
            for outcome in sorted(outcomes, key=lambda o: (o.attempt.refund.payment_id, o.attempt.refund.refund_id)):
                # In the attempt's own context: its events continue its trace, its log lines carry its ids.
                await asyncio.create_task(self._record_one(conn, outcome), context=outcome.context)
            if ends_episode:
                await end_auth_episode(conn, self._pause.kind)
        if ends_episode and self._pause.clear():
            log.info("provider_auth_recovered")

    async def _record_one(self, conn: asyncpg.Connection, outcome: _Outcome) -> None:
        current = await repository.lock_leased_attempt(conn, outcome.attempt)
        if current is None:
            log.warning("attempt_lease_lost", step=type(outcome.step).__name__)
            return
        try:
            await apply_step(conn, current, outcome.step, provider=self._provider.name)
        except repository.ProviderRefundTaken as taken:
            # Not our refund: believed, the unique index would refuse it at every turn, the key called each time.
            answer = RecordedForAnother(taken.provider_refund_id, taken.other_refund_id)
            step = next_step(current, answer, now=datetime.now(UTC), policy=self._policy)
            await apply_step(conn, current, step, provider=self._provider.name)

    async def _pause_calls(self, attempt: Attempt, error: str) -> None:
        pause = self._pause.trip()
        log.error("provider_auth_failed", error=error, calls_paused_for=pause)
        async with self._pool.acquire() as conn, conn.transaction():
            if await repository.lock_leased_attempt(conn, attempt) is None:
                return
            await repository.record_paused(conn, attempt, pause, error)
            await raise_auth_alert_once(conn, self._pause.kind, attempt.refund.merchant_id, error)

    async def _give_back(self, attempt: Attempt) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await repository.lock_leased_attempt(conn, attempt) is not None:
                    delay = self._policy.backoff(attempt.tries + 1)
                    await repository.release_attempt(conn, attempt, delay, "internal error, see logs")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("attempt_release_failed", error=repr(exc))  # the lease runs out instead
