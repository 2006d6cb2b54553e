"""Runs leased work from PostgreSQL with bounded concurrency: claim in a short transaction, work with no
transaction or lock held, record in another short transaction guarded by the lease.

Woken by NOTIFY when work is scheduled, polling as a fallback (and for retries that become due). Work that
dies leaves its row leased: the lease runs out and the row is claimed again, by this or another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from refundflow_processor.provider_pause import ProviderPause
from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)

J = TypeVar("J")
_SHUTDOWN_GRACE_SECONDS = 5.0


class LeaseDispatcher(Generic[J]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        channel: str,
        claim: Callable[[int], Awaitable[list[J]]],
        work: Callable[[J], Coroutine[Any, Any, None]],
        max_in_flight: int,
        poll_interval: float,
        pause: ProviderPause,
        name: str,
    ) -> None:
        self._pool, self._channel, self._claim, self._work = pool, channel, claim, work
        self._max_in_flight, self._poll_interval, self._pause, self._name = max_in_flight, poll_interval, pause, name
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            await run_on_notify(
                self._pool, self._channel, self.dispatch, poll_interval=self._poll_interval, name=self._name
            )
        finally:
            # On shutdown, let calls in flight finish within a grace period; what is cut off is leased and
            # runs again after its lease, with the same idempotency key.
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=_SHUTDOWN_GRACE_SECONDS)
            for task in self._in_flight:
                task.cancel()
            for task in list(self._in_flight):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def dispatch(self) -> bool:
        """Claim what fits and start it; True when more may be waiting (call again at once)."""
        if (paused := self._pause.remaining()) > 0:
            await asyncio.sleep(min(paused, self._poll_interval))
            return True
        free = self._max_in_flight - len(self._in_flight)
        if free <= 0:
            await asyncio.wait(self._in_flight, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED)
            return True
        jobs = await self._claim(free)
        for job in jobs:
            task: asyncio.Task[None] = asyncio.create_task(self._work(job), name=self._name)
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(jobs) == free

    async def drain(self) -> None:
        """Wait for the work in flight (tests and benchmarks)."""
        while self._in_flight:
            await asyncio.wait(self._in_flight)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("leased_work_failed", job=task.get_name(), error=repr(task.exception()))
