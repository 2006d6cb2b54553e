"""Runs leased work from PostgreSQL with bounded concurrency: claim a batch in a short transaction (each row leased),
work each item in its own task with no transaction or lock held, record in another short transaction.

Woken by NOTIFY when work is queued (or released), polling as a fallback (and for retries that become due), and
by its own work finishing when it was full. Woken from idle (nothing in flight, no backlog), it may wait
``gather_seconds`` before it claims, so that work trickling in (one item per transaction that queued it) is claimed
together: a claim costs a transaction whatever it takes. ``claim(limit, busy)`` must skip ``busy``, the keys of
what this process is still working on, so that nothing is worked twice at once here even if its lease ran out. Work
that dies leaves its row leased: the lease runs out and the row is claimed again, by this or another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from refundflow_shared.backoff import exponential, jittered
from refundflow_shared.metrics import LEASED_WORK_FAILED
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.transient_faults import database_is_unavailable
from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)

J = TypeVar("J")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
_SHUTDOWN_GRACE_SECONDS = 5.0  # for work whose owner sets none


def never_paused() -> float:
    return 0.0


class LeaseDispatcher(Generic[J, K]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        channel: str,
        claim: Callable[[int, list[K]], Awaitable[list[J]]],
        key: Callable[[J], K],
        work: Callable[[J], Coroutine[Any, Any, None]],
        max_in_flight: int,
        poll_interval: float,
        name: str,
        paused: Callable[[], float] = never_paused,
        gather_seconds: float = 0.0,
        shutdown_grace: float = _SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        """``paused()``: seconds for which nothing may be claimed (0: go ahead). ``shutdown_grace``: how long work in
        flight may finish on shutdown; the lease (its deadline plus the time to record it) is the natural one."""
        self._shutdown_grace = shutdown_grace
        self._pool, self._channel, self._claim, self._key, self._work = pool, channel, claim, key, work
        self._max_in_flight, self._poll_interval, self._name = max_in_flight, poll_interval, name
        self._refill_at = max(1, max_in_flight // 4)
        self._paused, self._gather_seconds = paused, gather_seconds
        self._in_flight: dict[asyncio.Task[None], K] = {}  # task -> the key of what it works on
        self._backlog = False  # the last claim was full: more may be waiting
        self._failed = LEASED_WORK_FAILED.labels(name)  # shown at 0 from the start: the first failure alerts

    async def run(self) -> None:
        try:
            await run_on_notify(
                self._pool, self._channel, self.dispatch, poll_interval=self._poll_interval, name=self._name
            )
        finally:
            # On shutdown, let work in flight finish within the grace period (a call cut off now runs again after
            # its lease, with the same idempotency key or message id); then cancel what is left.
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=self._shutdown_grace)
            for task in list(self._in_flight):
                task.cancel()
            for task in list(self._in_flight):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def dispatch(self) -> bool:
        """Claim what fits and start it; True when more may be waiting (call again at once)."""
        if (paused := self._paused()) > 0:
            await asyncio.sleep(min(paused, self._poll_interval))
            return True
        free = self._max_in_flight - len(self._in_flight)
        if free < self._refill_at:  # never when nothing is in flight: then all the slots are free
            # Nearly full: claim again once a quarter of the slots are free. A claim is a transaction whatever it
            # returns; claiming each time one item finishes made a backlog cost one claim per item.
            await asyncio.wait(self._in_flight, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED)
            return True
        if not self._backlog and not self._in_flight and self._gather_seconds > 0:
            # Idle, and no backlog: let a trickle gather. Not with work in flight (a slow endpoint's slots would
            # wait) nor after a full claim (a backlog is claimed as fast as slots free up).
            await asyncio.sleep(self._gather_seconds)
        jobs = await self._claim(free, list(self._in_flight.values()))
        for job in jobs:
            task: asyncio.Task[None] = asyncio.create_task(self._work(job), name=self._name)
            self._in_flight[task] = self._key(job)
            task.add_done_callback(self._done)
        self._backlog = len(jobs) == free
        return self._backlog

    async def drain(self) -> None:
        """Wait for the work in flight (tests and benchmarks)."""
        while self._in_flight:
            await asyncio.wait(self._in_flight)

    def _done(self, task: asyncio.Task[None]) -> None:
        key = self._in_flight.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug, not a fault the work handles: the same item fails again at every lease until it is fixed.
            log.error("leased_work_failed", job=task.get_name(), key=key, error=repr(exc), exc_info=exc)
            self._failed.inc()


async def recorded(record: Callable[[], Awaitable[T]], *, name: str, settings: ServiceSettings) -> T:
    """Run ``record``, what leased work did (a send that went out), and run it again while the database is away:
    left unrecorded, the work would be done again once its lease ran out. Retried well within the lease's margin,
    the lease holds meanwhile; ``record`` must be safe to run twice (a commit whose answer was lost)."""
    attempt = 0
    while True:
        try:
            return await record()
        except Exception as exc:
            if not database_is_unavailable(exc):
                raise
            attempt += 1
            delay = jittered(
                exponential(attempt, base=settings.consumer_retry_base_seconds, cap=settings.consumer_retry_max_seconds)
            )
            log.warning("lease_record_retrying", job=name, attempt=attempt, retry_in=delay, error=repr(exc))
            await asyncio.sleep(delay)
