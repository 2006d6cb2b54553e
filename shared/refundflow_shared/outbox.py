"""Transactional outbox: write events with the state change; a relay publishes them after commit."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import asyncpg
import structlog

from refundflow_shared.crash_points import crash_point
from refundflow_shared.events import Event, EventData, topic_for
from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)


async def add_event(conn: asyncpg.Connection, data: EventData, *, source: str) -> Event:
    """Stage ``data`` as an event in the caller's transaction; it is published only if that commits."""
    assert conn.is_in_transaction(), "outbox rows must be written in the state change's transaction"
    sequence = await conn.fetchval(
        "INSERT INTO event_sequences (partition_key, last_sequence) VALUES ($1, 1)"
        " ON CONFLICT (partition_key) DO UPDATE SET last_sequence = event_sequences.last_sequence + 1"
        " RETURNING last_sequence",
        data.partition_key(),
    )
    event = Event.wrap(data, source=source, sequence=sequence)
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, partition_key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
        event.id,
        event.type.value,
        event.partition_key,
        json.dumps(event.kafka_headers()),
        event.kafka_value(),
    )
    return event


class Publisher(Protocol):
    """What the relay needs of a broker: send and hand back the delivery future (FastStream's KafkaBroker)."""

    async def publish(
        self, message: Any, topic: str, *, key: bytes, headers: dict[str, str], no_confirm: bool
    ) -> Any: ...


# Take the oldest unsent rows no other relay holds, but never a row whose payment has an older unsent
# row held by another relay: that keeps each payment's events in order with several relays running.
_CLAIM_BATCH = """
WITH batch AS (
    SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
SELECT o.id, o.event_type, o.partition_key, o.headers, o.payload
FROM outbox o JOIN batch b ON b.id = o.id
WHERE NOT EXISTS (
    SELECT 1 FROM outbox earlier
    WHERE earlier.partition_key = o.partition_key AND earlier.sent_at IS NULL AND earlier.id < o.id
      AND earlier.id NOT IN (SELECT id FROM batch)
)
ORDER BY o.id
"""


class OutboxRelay:
    """Publishes committed outbox rows in batches and marks them sent once the broker acknowledged them.

    A crash between the broker's acknowledgement and the mark publishes the batch again: delivery is
    at-least-once, and consumers' inboxes make the effect happen once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        schema: str,
        topic_prefix: str = "",
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._channel = f"{schema}_outbox"
        self._prefix = topic_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval

    async def relay_batch(self) -> int:
        """Publish one batch; returns how many rows it marked sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_BATCH, self._batch_size)
            if not rows:
                return 0
            deliveries = [
                await self._publisher.publish(
                    bytes(row["payload"]),
                    topic_for(row["event_type"], self._prefix),
                    key=row["partition_key"].encode(),
                    headers=json.loads(row["headers"]),
                    no_confirm=True,
                )
                for row in rows
            ]
            await asyncio.gather(*deliveries)  # raises if any was not acknowledged: nothing is marked
            crash_point("outbox.after_publish")
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
        log.debug("outbox_relayed", count=len(rows))
        return len(rows)

    async def run(self) -> None:
        """Relay until cancelled: woken by NOTIFY on commit, polling as a fallback."""
        await run_on_notify(
            self._pool, self._channel, self._relay_more, poll_interval=self._poll_interval, name="outbox_relay"
        )

    async def _relay_more(self) -> bool:
        return await self.relay_batch() == self._batch_size
