"""Runs queued work from PostgreSQL with bounded concurrency, never waiting for a slow item to claim the next."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)

Row = dict[str, Any]
_SHUTDOWN_GRACE_SECONDS = 5.0


class QueueDispatcher:
    """Claims up to ``max_in_flight`` leased rows and works each in its own task.

    Woken by NOTIFY when rows are queued or released, polling as a fallback (and for retries that become due).
    ``claim(limit, busy_ids)`` must skip ``busy_ids``, the rows this process is still working on, so that a row
    is never worked twice at once here even if its lease ran out. A task that dies leaves its row leased: the
    lease runs out and the row is claimed again (by this process or another).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        channel: str,
        claim: Callable[[int, list[int]], Awaitable[list[Row]]],
        work: Callable[[Row], Coroutine[Any, Any, None]],
        max_in_flight: int,
        poll_interval: float,
        name: str,
    ) -> None:
        self._pool, self._channel, self._claim, self._work = pool, channel, claim, work
        self._max_in_flight, self._poll_interval, self._name = max_in_flight, poll_interval, name
        self._in_flight: dict[asyncio.Task[None], int] = {}  # task -> the id of the row it works on

    async def run(self) -> None:
        try:
            await run_on_notify(
                self._pool, self._channel, self._dispatch, poll_interval=self._poll_interval, name=self._name
            )
        finally:
            # On shutdown, let work in flight finish (a message half-sent now would be sent again after its
            # lease), within a grace period; then cancel what is left.
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=_SHUTDOWN_GRACE_SECONDS)
            for task in list(self._in_flight):
                task.cancel()
            for task in list(self._in_flight):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _dispatch(self) -> bool:
        free = self._max_in_flight - len(self._in_flight)
        if free <= 0:
            return False  # a finishing task releases its row, and that NOTIFY wakes us
        rows = await self._claim(free, list(self._in_flight.values()))
        for row in rows:
            task = asyncio.create_task(self._work(row), name=f"{self._name}:{row['id']}")
            self._in_flight[task] = row["id"]
            task.add_done_callback(self._done)
        return len(rows) == free

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("queued_work_failed", job=task.get_name(), error=repr(task.exception()))
