"""Group commit, done by the application: records that many tasks make at about the same time are written together,
in one statement or transaction and one commit, instead of one each.

The first record is written at once; those that come while a write runs wait for it and then go together. So no
record waits for a timer, and groups grow with the load: on an idle system each record is its own group. A group
that fails is written again one record at a time, so one bad record fails alone (and a deadlock between groups
costs a retry, not an error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_Waiting = list[tuple[T, "asyncio.Future[None]"]]


class GroupCommit(Generic[T]):
    def __init__(self, write_all: Callable[[list[T]], Awaitable[None]], *, max_group: int = 200) -> None:
        """``write_all(records)``: write the records, all or none (one statement, or one transaction)."""
        self._write_all, self._max_group = write_all, max_group
        self._waiting: _Waiting[T] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, record: T) -> None:
        """Return once ``record`` is written (with whatever came meanwhile); raise what writing it raised."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, written))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting(), name="group_commit")
        await written

    async def _write_waiting(self) -> None:
        group: _Waiting[T] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
                await self._write_group(group)
        finally:
            self._writer = None
            for _, written in group + self._waiting:  # cancelled (shutting down): nothing will write these
                if not written.done():
                    written.cancel()
            self._waiting = []

    async def _write_group(self, group: _Waiting[T]) -> None:
        try:
            await self._write_all([record for record, _ in group])
        except Exception as exc:  # noqa: BLE001 - handed to the tasks that wait for these records
            if len(group) == 1:
                for _, written in group:
                    _settle(written, exc)
                return
            for record, written in group:  # one at a time: the record that failed the group fails alone
                try:
                    await self._write_all([record])
                except Exception as alone:  # noqa: BLE001 - handed to the task that waits for this record
                    _settle(written, alone)
                else:
                    _settle(written, None)
            return
        for _, written in group:
            _settle(written, None)


def _settle(written: asyncio.Future[None], failure: Exception | None) -> None:
    if written.done():  # its task was cancelled meanwhile: the record was written all the same
        return
    if failure is None:
        written.set_result(None)
    else:
        written.set_exception(failure)
