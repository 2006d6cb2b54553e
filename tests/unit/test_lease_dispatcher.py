"""The lease dispatcher claims in batches: under load, a claim (a transaction, whatever it returns) takes the slots
that freed up together, not one claim per finished item; woken from idle, it can let a trickle of work gather
first. Work that raises is logged with what it worked on, and counted."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

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


class Trickle:
    """A queue that work arrives in one item at a time; a claim takes what has arrived."""

    def __init__(self) -> None:
        self.queued: list[int] = []
        self.claims: list[list[int]] = []
        self.done = asyncio.Event()  # the jobs run until it is set
        self.done.set()

    async def claim(self, limit: int, busy: list[int]) -> list[int]:
        taken, self.queued = self.queued[:limit], self.queued[limit:]
        self.claims.append(taken)
        return taken

    async def work(self, job: int) -> None:
        await self.done.wait()


def dispatcher(
    backlog: Backlog | Trickle, max_in_flight: int, gather_seconds: float = 0.0
) -> LeaseDispatcher[int, int]:
    return LeaseDispatcher(
        cast(asyncpg.Pool, None),  # only run() listens on the database; dispatch() is driven here
        channel="unused",
        claim=backlog.claim,
        key=lambda job: job,
        work=backlog.work,
        max_in_flight=max_in_flight,
        poll_interval=0.05,
        name="test",
        gather_seconds=gather_seconds,
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


async def test_woken_from_idle_it_lets_work_gather_and_claims_it_together() -> None:
    trickle = Trickle()
    jobs = dispatcher(trickle, max_in_flight=8, gather_seconds=0.2)
    trickle.queued.append(1)  # the wake-up's work; two more items come while the dispatcher waits
    woken = asyncio.create_task(jobs.dispatch())
    await asyncio.sleep(0.05)
    trickle.queued += [2, 3]
    assert await woken is False
    assert trickle.claims == [[1, 2, 3]], "one claim for the three"
    await jobs.drain()


async def test_without_a_gathering_wait_it_claims_at_once() -> None:
    trickle = Trickle()
    jobs = dispatcher(trickle, max_in_flight=8)
    trickle.queued.append(1)
    woken = asyncio.create_task(jobs.dispatch())
    await asyncio.sleep(0.05)
    trickle.queued += [2, 3]
    await woken
    assert trickle.claims == [[1]]
    await jobs.drain()


async def test_with_work_in_flight_it_claims_at_once() -> None:
    trickle = Trickle()
    trickle.done.clear()
    jobs = dispatcher(trickle, max_in_flight=8, gather_seconds=1.0)
    trickle.queued.append(1)
    assert await jobs.dispatch() is False  # idle: it waited, then took the one item, which is still running
    trickle.queued.append(2)
    # Slots taken by slow work (a slow endpoint's) are refilled without a wait.
    assert await asyncio.wait_for(jobs.dispatch(), timeout=0.5) is False
    assert trickle.claims == [[1], [2]]
    trickle.done.set()
    await jobs.drain()


async def test_after_a_full_claim_it_claims_again_without_waiting() -> None:
    backlog = Backlog()
    jobs = dispatcher(backlog, max_in_flight=4, gather_seconds=1.0)
    assert await jobs.dispatch() is True  # woken from idle: it waited, then took all four; more may be waiting
    await asyncio.sleep(0.01)
    await backlog.finish(4)
    # A backlog is claimed as fast as slots free up: no gathering wait between its claims.
    assert await asyncio.wait_for(jobs.dispatch(), timeout=0.5) is True
    assert backlog.asked == [4, 4]
    await backlog.finish(4)
    await jobs.drain()


class Crashing(Trickle):
    """Work that raises, as a bug would: it is tried again every lease, so it must be seen."""

    async def work(self, job: int) -> None:
        raise RuntimeError(f"a bug working on {job}")


async def test_work_that_raises_is_logged_with_its_key_and_traceback_and_counted() -> None:
    crashing = Crashing()
    crashing.queued = [41]
    jobs = dispatcher(crashing, max_in_flight=4)
    failed = {"worker": "test"}
    before = REGISTRY.get_sample_value("refundflow_leased_work_failed_total", failed)
    assert before is not None, "shown at 0 from the start: the alert sees the first failure"
    with capture_logs() as logs:
        await jobs.dispatch()
        await jobs.drain()
        await asyncio.sleep(0)  # the done callback runs
    [line] = [line for line in logs if line["event"] == "leased_work_failed"]
    assert line["log_level"] == "error" and line["job"] == "test" and line["key"] == 41
    assert isinstance(line["exc_info"], RuntimeError)
    assert REGISTRY.get_sample_value("refundflow_leased_work_failed_total", failed) == before + 1
