"""A replay of every event since a time: asked for, it is recorded in one transaction and answered at once; the
notifier's replay job walks it in batches, keeping its place in the row, so a restart resumes the walk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from refundflow_notifier import webhook_replays, webhook_store
from refundflow_shared.events import Event
from tests.support.notifier_harness import notifier_database, notifier_settings, succeeded
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

REACH = timedelta(days=30)


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with notifier_database(postgres_url, max_size=6) as pool:
        yield pool


async def endpoint_with_sent_events(pool: asyncpg.Pool, count: int) -> tuple[str, list[Event]]:
    """An enabled endpoint to which ``count`` events were delivered already."""
    merchant_id, endpoint_id = f"mer_{uuid.uuid4().hex[:10]}", f"we_{uuid.uuid4().hex[:12]}"
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
        " VALUES ($1, $2, 'https://hooks.example/refunds', '{refund.succeeded}', true, 'sealed', 1)",
        endpoint_id,
        merchant_id,
    )
    sent = [Event.wrap(succeeded(merchant_id), source="refundflow/test", sequence=1) for _ in range(count)]
    async with pool.acquire() as conn:
        await webhook_store.queue_events(conn, [(event, None) for event in sent], max_endpoints=5)
    await pool.execute("UPDATE webhook_deliveries SET status = 'succeeded', finished_at = now()")
    return endpoint_id, sent


async def ask(pool: asyncpg.Pool, endpoint_id: str, since: datetime) -> str:
    async with pool.acquire() as conn, conn.transaction():
        return await webhook_replays.request_replay(conn, endpoint_id, since, reach=REACH)


async def replayed(pool: asyncpg.Pool, endpoint_id: str) -> list[uuid.UUID]:
    rows = await pool.fetch("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = $1 AND replay", endpoint_id)
    return [r["event_id"] for r in rows]


async def test_a_replay_since_a_time_is_recorded_at_once_and_queues_nothing_in_the_request(pool: asyncpg.Pool) -> None:
    endpoint_id, _ = await endpoint_with_sent_events(pool, 3)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    assert await ask(pool, endpoint_id, an_hour_ago) == "started"
    assert await replayed(pool, endpoint_id) == [], "the request walks nothing: the replay job does"
    [recorded] = await pool.fetch("SELECT endpoint_id, since, reach, finished_at FROM webhook_replays")
    assert dict(recorded) == {"endpoint_id": endpoint_id, "since": an_hour_ago, "reach": REACH, "finished_at": None}

    # The same request again while it walks joins it: no second walk.
    assert await ask(pool, endpoint_id, an_hour_ago) == "already_running"
    assert await pool.fetchval("SELECT count(*) FROM webhook_replays") == 1
    # A period with nothing in it, or a disabled endpoint, has nothing to replay: nothing is recorded.
    assert await ask(pool, endpoint_id, datetime.now(UTC)) == "nothing_to_replay"
    await pool.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = $1", endpoint_id)
    assert await ask(pool, endpoint_id, an_hour_ago - timedelta(minutes=1)) == "nothing_to_replay"
    assert await pool.fetchval("SELECT count(*) FROM webhook_replays") == 1


async def test_the_replay_job_walks_in_batches_and_resumes_where_a_stopped_instance_left_off(
    pool: asyncpg.Pool,
) -> None:
    endpoint_id, sent = await endpoint_with_sent_events(pool, 5)
    assert await ask(pool, endpoint_id, datetime.now(UTC) - timedelta(hours=1)) == "started"
    replay_id = await pool.fetchval("SELECT id FROM webhook_replays")

    # An instance walks one batch of two, then stops (its host gone): its place is in the row, its lease runs out.
    assert await webhook_replays.walk_batch(pool, replay_id, batch=2, lease_seconds=30) is True
    assert len(await replayed(pool, endpoint_id)) == 2
    await pool.execute("UPDATE webhook_replays SET locked_until = now() - interval '1 second'")

    settings = notifier_settings("postgresql://unused/notifier", "unused:9092", 1025)
    job = asyncio.create_task(webhook_replays.ReplayWalker(pool, settings, batch=2).dispatcher().run())
    try:

        async def finished() -> bool:
            return await pool.fetchval("SELECT finished_at IS NOT NULL FROM webhook_replays") is True

        await eventually(finished)
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    assert sorted(await replayed(pool, endpoint_id)) == sorted(e.id for e in sent), "each event once, none again"
    assert await pool.fetchval("SELECT scheduled FROM webhook_replays") == 5
    # Finished, the same request is a new walk; what is still pending from the first is not queued twice.
    assert await ask(pool, endpoint_id, datetime.now(UTC) - timedelta(hours=1)) == "started"


async def test_a_replay_whose_endpoint_was_disabled_before_its_walk_queues_nothing_and_ends(pool: asyncpg.Pool) -> None:
    endpoint_id, _ = await endpoint_with_sent_events(pool, 3)
    assert await ask(pool, endpoint_id, datetime.now(UTC) - timedelta(hours=1)) == "started"
    replay_id = await pool.fetchval("SELECT id FROM webhook_replays")
    await pool.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = $1", endpoint_id)

    assert await webhook_replays.walk_batch(pool, replay_id, batch=2, lease_seconds=30) is False
    assert await replayed(pool, endpoint_id) == []
    assert await pool.fetchval("SELECT finished_at IS NOT NULL FROM webhook_replays") is True
