"""`make bench`: throughput of the messaging backbone on the real broker and PostgreSQL.

Measures, for N refund.requested events: staging (one transaction per event, as state changes do),
relaying (outbox -> broker, batched), and consuming (inbox row + commit per event, one consumer).
Uses KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set, else starts the embedded broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import asyncpg
from faststream.kafka import KafkaBroker

from refundflow_shared.consumer import EventConsumer
from refundflow_shared.database import create_pool
from refundflow_shared.events import Event, RefundRequested
from refundflow_shared.kafka_topics import all_topics, ensure_topics
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.outbox import OutboxRelay, add_event
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.structured_logging import configure_logging
from tests.conftest import create_database
from tests.support.infrastructure import kafka_broker, postgres_server

SCHEMA = "bench"
EVENTS = int(os.environ.get("BENCH_EVENTS", "5000"))


def event(i: int) -> RefundRequested:
    return RefundRequested(
        refund_id=f"ref_{i}",
        payment_id=f"pay_{i % 500}",
        merchant_id="mer_bench",
        customer_email="c@example.com",
        amount=100,
        currency="EUR",
        reason="duplicate",
    )


async def stage(pool: asyncpg.Pool, count: int, concurrency: int = 8) -> float:
    async def worker(ids: range) -> None:
        for i in ids:
            async with pool.acquire() as conn, conn.transaction():
                await add_event(conn, event(i), source="refundflow/bench")

    started = time.perf_counter()
    await asyncio.gather(*(worker(range(w, count, concurrency)) for w in range(concurrency)))
    return time.perf_counter() - started


async def relay(pool: asyncpg.Pool, broker: KafkaBroker, prefix: str) -> float:
    relay = OutboxRelay(pool, broker, schema=SCHEMA, topic_prefix=prefix, batch_size=500)
    started = time.perf_counter()
    while await relay.relay_batch():
        pass
    return time.perf_counter() - started


async def consume(pool: asyncpg.Pool, settings: ServiceSettings, count: int) -> float:
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)
    consumer = EventConsumer(SCHEMA, broker, pool, settings)

    @consumer.handles(RefundRequested)
    async def no_effect(conn: asyncpg.Connection, event: Event, data: RefundRequested) -> None:
        return None  # the inbox row and the commit are the cost being measured

    consumer.subscribe()
    await broker.start()
    try:
        while not await pool.fetchval("SELECT count(*) FROM inbox"):
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while await pool.fetchval("SELECT count(*) FROM inbox") < count:
            await asyncio.sleep(0.05)
        return time.perf_counter() - started
    finally:
        await broker.stop()


async def measure(database_url: str, bootstrap: str) -> None:
    prefix = f"bench{int(time.time())}."
    settings = ServiceSettings(
        database_url=database_url, kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, log_level="WARNING"
    )
    configure_logging("bench", "WARNING")
    await apply_migrations(database_url, SCHEMA, Path("/nonexistent"))
    await ensure_topics(bootstrap, all_topics(prefix), partitions=6)
    pool = await create_pool(database_url, SCHEMA, max_size=10)
    broker = KafkaBroker(bootstrap, logger=None)
    await broker.connect()
    try:
        rows = [
            ("stage (1 tx per event, 8 writers)", EVENTS, await stage(pool, EVENTS)),
            ("relay (outbox -> broker, batches of 500)", EVENTS, await relay(pool, broker, prefix)),
            ("consume (inbox + commit per event, 1 consumer)", EVENTS, await consume(pool, settings, EVENTS)),
        ]
    finally:
        await broker.stop()
        await pool.close()
    print(f"\n{'step':<50}{'events':>8}{'seconds':>10}{'events/s':>11}")
    for name, count, seconds in rows:
        print(f"{name:<50}{count:>8}{seconds:>10.2f}{count / seconds:>11.0f}")


def main() -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        server = stack.enter_context(postgres_server(Path(workdir)))
        bootstrap = stack.enter_context(kafka_broker(Path(workdir)))
        database_url = asyncio.run(create_database(server))
        asyncio.run(measure(database_url, bootstrap))


if __name__ == "__main__":
    sys.exit(main())
