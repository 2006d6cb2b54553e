"""The raw capacity of what the stack stands on, measured in the same run: PostgreSQL (pgbench -N -c8) and the
broker (a plain aiokafka producer and consumer). The stack's own figures are then read as ratios to these."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from refundflow_devstack.local_postgres import PG_BIN


async def pgbench_tps(database_url: str, seconds: int) -> float | None:
    """TPS of ``pgbench -N -c8 -j2`` (the simple-update script, 8 clients) on a database of its own; None when
    pgbench could not run (no right to create a database, say)."""
    name = f"pgbench_{uuid.uuid4().hex[:8]}"
    base, _, query = database_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError:
        await admin.close()
        return None
    try:
        pgbench = str(PG_BIN / "pgbench")
        await asyncio.to_thread(subprocess.run, [pgbench, "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        command = [pgbench, "-N", "-c", "8", "-j", "2", "-T", str(seconds), url]
        run = await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, text=True)
        found = re.search(r"tps = ([0-9.]+)", run.stdout)
        return float(found.group(1)) if found else None
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def broker_rates(bootstrap: str, prefix: str, count: int, size: int = 600) -> tuple[float, float]:
    """Records per second produced (acks=all, batched, as the relay publishes) and consumed, of ``size`` bytes
    each (about an event), on a topic of its own."""
    topic = f"{prefix}bench.raw"
    payload = b"x" * size
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        await (await producer.send(topic, payload, key=b"k0"))  # creates the topic (auto-creation) and warms up
        started = time.perf_counter()
        futures = [await producer.send(topic, payload, key=f"k{i % 64}".encode()) for i in range(count)]
        for future in futures:
            await future
        produced = count / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < count + 1:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batches.values())
        consumed = seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return produced, consumed
