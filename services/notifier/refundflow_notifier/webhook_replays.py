"""Replays of every event an endpoint subscribes to since a time (after an outage, say).

The request only records the replay (endpoint, since, reach) and answers: a month of a busy endpoint's events takes
far longer to queue than intake waits for an answer. The replay job walks it in batches (short transactions), each
batch queuing its events as replays and moving the replay's place on in the same transaction, so an instance that
stops mid-walk leaves the rest to be resumed once its lease runs out, never walked from the start again. The same
replay asked again while it is walked joins that walk.

A replay is a new delivery of an event already sent (same ``webhook-id``), marked as a replay: an endpoint's live
deliveries are claimed before its replays (``webhook_store.claim_due``), so a long replay never holds up what
happens meanwhile. Replays reach back at most the retention period, and never queue an event twice for one endpoint
while an earlier replay of it is still pending, so repeating a request does not multiply the traffic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.lease_dispatcher import LeaseDispatcher, recorded

REPLAY_BATCH = 1000
# Walks at once per instance: each is a string of short transactions, and the deliveries it queues wait anyway.
WALKS_AT_ONCE = 2

ReplayAnswer = Literal["started", "already_running", "nothing_to_replay"]

# The endpoint ($1), if enabled, under the lock a disable waits for (webhook_store._stop_queuing_to): a disabled
# endpoint gets no replay, and a walk ends when its endpoint is disabled.
_ENABLED_ENDPOINT = """endpoint AS (
    SELECT id, merchant_id, event_types FROM webhook_endpoints WHERE id = $1 AND enabled AND NOT deleted FOR KEY SHARE
)"""

_REQUEST = f"""
WITH {_ENABLED_ENDPOINT}, something AS (
    SELECT 1 FROM endpoint e WHERE EXISTS (
        SELECT 1 FROM webhook_events ev
        WHERE ev.merchant_id = e.merchant_id AND ev.event_type = ANY(e.event_types)
          AND ev.occurred_at >= greatest($2, now() - $3::interval)
    )
), recorded AS (
    INSERT INTO webhook_replays (endpoint_id, since, reach) SELECT $1, $2, $3 FROM something
    ON CONFLICT (endpoint_id, since) WHERE finished_at IS NULL DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM something) AS something, EXISTS (SELECT 1 FROM recorded) AS started
"""


async def request_replay(
    conn: asyncpg.Connection, endpoint_id: str, since: datetime, *, reach: timedelta
) -> ReplayAnswer:
    """Record a replay of every event the endpoint subscribes to that happened at or after ``since`` (no further
    back than ``reach``), for the replay job to walk: ``started``; ``already_running`` when the same replay is being
    walked; ``nothing_to_replay`` when the period holds no such event or the endpoint is disabled."""
    assert conn.is_in_transaction(), "the endpoint's lock must be held until the replay is recorded"
    row = await conn.fetchrow(_REQUEST, endpoint_id, since, reach)
    assert row is not None
    if not row["something"]:
        return "nothing_to_replay"
    return "started" if row["started"] else "already_running"


_CLAIM = """
UPDATE webhook_replays SET locked_until = now() + $3 * interval '1 second'
WHERE id IN (
    SELECT id FROM webhook_replays
    WHERE finished_at IS NULL AND (locked_until IS NULL OR locked_until < now()) AND id <> ALL($2::bigint[])
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


async def claim(pool: asyncpg.Pool, limit: int, busy: list[int], *, lease_seconds: float) -> list[int]:
    """Replays to walk, each leased: no other instance walks one while its lease holds."""
    rows = await pool.fetch(_CLAIM, limit, busy, lease_seconds)
    return [r["id"] for r in rows]


_BATCH = f"""
WITH {_ENABLED_ENDPOINT}, batch AS (
    SELECT ev.event_id, ev.occurred_at, e.merchant_id
    FROM endpoint e
    JOIN webhook_events ev ON ev.merchant_id = e.merchant_id AND ev.event_type = ANY(e.event_types)
    WHERE ev.occurred_at >= greatest($2, now() - $4::interval)
      AND ($3::uuid IS NULL OR (ev.occurred_at, ev.event_id) > ($2, $3::uuid))
    ORDER BY ev.occurred_at, ev.event_id LIMIT $5
), queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id, replay)
    SELECT $1, b.merchant_id, b.event_id, true FROM batch b
    WHERE NOT EXISTS (
        SELECT 1 FROM webhook_deliveries d
        WHERE d.endpoint_id = $1 AND d.event_id = b.event_id AND d.replay AND d.status = 'pending'
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued, (SELECT count(*) FROM batch) AS walked, last.occurred_at,
       last.event_id
FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT occurred_at, event_id FROM batch ORDER BY occurred_at DESC, event_id DESC LIMIT 1
) last ON true
"""


async def walk_batch(pool: asyncpg.Pool, replay_id: int, *, batch: int, lease_seconds: float) -> bool:
    """Queue the replay's next ``batch`` events and move its place on past them, in one transaction; the lease is
    renewed, or the replay finished when nothing is left. True while more may be left."""
    async with pool.acquire() as conn, conn.transaction():
        # Locked: two walkers of one replay (a lease that ran out under a slow one) take turns, each from the place
        # the other left, and never queue a batch twice.
        replay = await conn.fetchrow(
            "SELECT endpoint_id, since, reach, after_occurred_at, after_event_id FROM webhook_replays"
            " WHERE id = $1 AND finished_at IS NULL FOR UPDATE",
            replay_id,
        )
        if replay is None:
            return False
        row = await conn.fetchrow(
            _BATCH,
            replay["endpoint_id"],
            replay["after_occurred_at"] or replay["since"],
            replay["after_event_id"],
            replay["reach"],
            batch,
        )
        assert row is not None
        more = int(row["walked"]) == batch
        await conn.execute(
            "UPDATE webhook_replays SET scheduled = scheduled + $2,"
            " after_occurred_at = coalesce($3, after_occurred_at), after_event_id = coalesce($4, after_event_id),"
            " locked_until = CASE WHEN $5 THEN now() + $6 * interval '1 second' END,"
            " finished_at = CASE WHEN NOT $5 THEN now() END"
            " WHERE id = $1",
            replay_id,
            row["queued"],
            row["occurred_at"],
            row["event_id"],
            more,
            lease_seconds,
        )
    return more


class ReplayWalker:
    """The replay job: claims recorded replays and walks each to its end, batch by batch."""

    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings, *, batch: int = REPLAY_BATCH) -> None:
        self._pool, self._settings, self._batch = pool, settings, batch
        self._lease = settings.lease_margin_seconds  # renewed at every batch, which takes a fraction of it

    def dispatcher(self) -> LeaseDispatcher[int, int]:
        return LeaseDispatcher(
            self._pool,
            channel="notifier_webhook_replays",
            claim=lambda limit, busy: claim(self._pool, limit, busy, lease_seconds=self._lease),
            key=lambda replay_id: replay_id,
            work=self.walk,
            max_in_flight=WALKS_AT_ONCE,
            poll_interval=self._settings.webhook_poll_interval_seconds,
            name="webhook_replays",
        )

    async def walk(self, replay_id: int) -> None:
        async def next_batch() -> bool:
            return await walk_batch(self._pool, replay_id, batch=self._batch, lease_seconds=self._lease)

        # A batch is safe to run again (it reads its place from the row): the database away, it waits for it.
        while await recorded(next_batch, name="webhook_replays", settings=self._settings):
            pass
