"""Group commit: what comes while a write runs goes in the next write, together; a failing group is written again
one record at a time, so only the bad record fails."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from refundflow_shared.group_commit import GroupCommit

pytestmark = pytest.mark.asyncio


class Table:
    """Where the records go: every write's records, in order; a write may be held open, and ``bad`` ones refused."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.writes: list[list[str]] = []
        self.rows: list[str] = []
        self.open = asyncio.Event()
        self.open.set()
        self._bad = bad

    async def write_all(self, records: list[str]) -> None:
        self.writes.append(records)
        await self.open.wait()
        if refused := [r for r in records if r in self._bad]:
            raise ValueError(f"refused {refused}")
        self.rows.extend(records)


async def started(write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """The write, begun: it queued its record before this returns."""
    task = asyncio.create_task(write)
    await asyncio.sleep(0)
    return task


async def test_an_idle_writer_writes_each_record_at_once_alone() -> None:
    table = Table()
    group = GroupCommit(table.write_all)
    await group.write("a")
    await group.write("b")
    assert table.writes == [["a"], ["b"]]


async def test_records_that_come_while_a_write_runs_go_together_in_the_next() -> None:
    table = Table()
    table.open.clear()
    group = GroupCommit(table.write_all)
    first = await started(group.write("a"))
    rest = [await started(group.write(r)) for r in "bcde"]
    assert table.writes == [["a"]]  # held open: the others wait for it
    table.open.set()
    await asyncio.gather(first, *rest)
    assert table.writes == [["a"], ["b", "c", "d", "e"]]
    assert table.rows == ["a", "b", "c", "d", "e"]


async def test_a_group_never_grows_past_its_cap() -> None:
    table = Table()
    table.open.clear()
    group = GroupCommit(table.write_all, max_group=2)
    tasks = [await started(group.write(r)) for r in "abcde"]
    table.open.set()
    await asyncio.gather(*tasks)
    assert table.writes == [["a"], ["b", "c"], ["d", "e"]]


async def test_a_bad_record_fails_alone_and_the_rest_of_its_group_is_written() -> None:
    table = Table(bad=frozenset({"c"}))
    table.open.clear()
    group = GroupCommit(table.write_all)
    first = await started(group.write("a"))
    rest = {r: await started(group.write(r)) for r in "bcd"}
    table.open.set()
    await first
    await asyncio.wait(rest.values())
    assert rest["b"].exception() is None and rest["d"].exception() is None
    with pytest.raises(ValueError, match="refused"):
        rest["c"].result()
    assert table.writes == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]
    assert table.rows == ["a", "b", "d"]


async def test_a_record_alone_that_fails_is_not_tried_again() -> None:
    table = Table(bad=frozenset({"a"}))
    group = GroupCommit(table.write_all)
    with pytest.raises(ValueError, match="refused"):
        await group.write("a")
    assert table.writes == [["a"]]
    await group.write("b")  # the writer goes on
    assert table.rows == ["b"]


async def test_a_waiter_that_is_cancelled_still_has_its_record_written() -> None:
    table = Table()
    table.open.clear()
    group = GroupCommit(table.write_all)
    first = await started(group.write("a"))
    gone = await started(group.write("b"))
    stays = await started(group.write("c"))
    gone.cancel()
    table.open.set()
    await asyncio.gather(first, stays)
    assert gone.cancelled()
    assert table.rows == ["a", "b", "c"]


async def test_records_left_when_the_writer_is_cancelled_are_cancelled_not_left_waiting() -> None:
    table = Table()
    table.open.clear()
    group = GroupCommit(table.write_all)
    first = await started(group.write("a"))
    second = await started(group.write("b"))
    writer = next(t for t in asyncio.all_tasks() if t.get_name() == "group_commit")
    writer.cancel()  # shutting down, mid-write
    await asyncio.wait([first, second], timeout=1)
    assert first.cancelled() and second.cancelled()
    table.open.set()
    await group.write("c")  # a new writer starts
    assert table.rows == ["c"]
