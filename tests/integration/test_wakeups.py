"""Background jobs wake on NOTIFY through one listening connection per pool (PostgreSQL signals every listening
backend at each notifying commit, so one per job would cost the server for each job), each job on its own channel,
and they outlive the loss of that connection."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from refundflow_shared.database import create_pool
from refundflow_shared.wakeup_loop import run_on_notify
from tests.conftest import create_database
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHANNELS = ("wake_relay", "wake_messages", "wake_webhooks")


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(await create_database(postgres_url), "public", max_size=5)
    yield pool
    await pool.close()


async def listening_backends(pool: asyncpg.Pool) -> list[int]:
    """The backends of this database whose last statement was a LISTEN (an UNLISTEN does not match)."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    )
    return [row["pid"] for row in rows]


async def test_the_jobs_of_a_pool_share_one_listener_each_woken_by_its_channel_and_outlive_its_loss(
    pool: asyncpg.Pool,
) -> None:
    calls: Counter[str] = Counter()

    def job(channel: str) -> asyncio.Task[None]:
        async def work() -> bool:
            calls[channel] += 1
            return False  # nothing more: wait for a NOTIFY (the poll is an hour away)

        return asyncio.create_task(run_on_notify(pool, channel, work, poll_interval=3600, name=channel))

    jobs = [job(channel) for channel in CHANNELS]
    try:
        await eventually(lambda: _each_ran(calls, 1))
        await eventually(lambda: _listeners_are(pool, 1))
        [listener] = await listening_backends(pool)

        await pool.execute("SELECT pg_notify('wake_messages', '')")
        await eventually(lambda: _ran(calls, {"wake_relay": 1, "wake_messages": 2, "wake_webhooks": 1}))

        # The connection is lost: every job runs once more, and they listen again, on a new connection.
        await pool.execute("SELECT pg_terminate_backend($1)", listener)
        await eventually(lambda: _each_ran(calls, 2, plus={"wake_messages": 1}))
        await eventually(lambda: _listeners_are(pool, 1))
        assert await listening_backends(pool) != [listener]
        await pool.execute("SELECT pg_notify('wake_webhooks', '')")
        await eventually(lambda: _ran(calls, {"wake_relay": 2, "wake_messages": 3, "wake_webhooks": 3}))
    finally:
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    assert await listening_backends(pool) == [], "the last job to stop unlistens and gives the connection back"
    assert pool.get_idle_size() == pool.get_size(), "no connection is left checked out"


async def _each_ran(calls: Counter[str], times: int, plus: dict[str, int] | None = None) -> bool:
    return await _ran(calls, {channel: times + (plus or {}).get(channel, 0) for channel in CHANNELS})


async def _ran(calls: Counter[str], expected: dict[str, int]) -> bool:
    return dict(calls) == expected


async def _listeners_are(pool: asyncpg.Pool, count: int) -> bool:
    return len(await listening_backends(pool)) == count
