"""The lease dispatcher claims in batches: under load, a claim (a transaction, whatever it returns) takes the slots
that freed up together, not one claim per finished item."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest

from refundflow_shared.lease_dispatcher import LeaseDispatcher

pytestmark = pytest.mark.asyncio


class Backlog:
    """An endless queue of jobs; each runs until the test finishes it."""

    def __init__(self) -> None:
        self.asked: list[int] = []  # the limit of every claim
        self.running: dict[int, asyncio.Event] = {}
        self._next = 0

    async def claim(self, limit: int, busy: list[int]) -> list[int]:
        self.asked.append(limit)
        jobs = list(range(self._next, self._next + limit))
        self._next += limit
        self.running.update((job, asyncio.Event()) for job in jobs)
        return jobs

    async def work(self, job: int) -> None:
        await self.running[job].wait()

    async def finish(self, count: int) -> None:
        for job in sorted(j for j, done in self.running.items() if not done.is_set())[:count]:
            self.running[job].set()
        await asyncio.sleep(0.01)  # the finished tasks end


def dispatcher(backlog: Backlog, max_in_flight: int) -> LeaseDispatcher[int, int]:
    return LeaseDispatcher(
        cast(asyncpg.Pool, None),  # only run() listens on the database; dispatch() is driven here
        channel="unused",
        claim=backlog.claim,
        key=lambda job: job,
        work=backlog.work,
        max_in_flight=max_in_flight,
        poll_interval=0.05,
        name="test",
    )


async def test_a_full_dispatcher_claims_again_once_a_quarter_of_its_slots_are_free() -> None:
    backlog = Backlog()
    jobs = dispatcher(backlog, max_in_flight=16)
    assert await jobs.dispatch() is True  # claimed all 16: more may be waiting
    await asyncio.sleep(0.01)

    await backlog.finish(1)
    assert await jobs.dispatch() is True  # waited for a slot to free (or the poll interval): no claim for one
    await backlog.finish(2)
    await jobs.dispatch()
    assert backlog.asked == [16], "three free slots of sixteen: not worth a claim yet"

    await backlog.finish(1)
    await jobs.dispatch()
    assert backlog.asked == [16, 4], "four free: one claim for the four"
    await backlog.finish(16)
    await jobs.drain()


async def test_a_small_dispatcher_claims_as_soon_as_one_slot_is_free() -> None:
    backlog = Backlog()
    jobs = dispatcher(backlog, max_in_flight=2)
    await jobs.dispatch()
    await asyncio.sleep(0.01)
    await backlog.finish(1)
    await jobs.dispatch()
    assert backlog.asked == [2, 1]
    await backlog.finish(2)
    await jobs.drain()
