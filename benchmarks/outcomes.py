"""What the stack did, read after the fact: from the databases, the SMTP sink's folder, the sandbox and the broker."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition


async def fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def intake_succeeded_at(database_url: str, refund_ids: list[str]) -> dict[str, float]:
    """When intake recorded each refund as succeeded (its timeline entry)."""
    rows = await fetch(
        database_url,
        "SELECT refund_id, at FROM intake.refund_timeline WHERE status = 'succeeded' AND refund_id = ANY($1)",
        refund_ids,
    )
    return {r["refund_id"]: r["at"].timestamp() for r in rows}


async def processor_succeeded_at(database_url: str, refund_ids: list[str]) -> list[float]:
    rows = await fetch(
        database_url,
        "SELECT updated_at FROM processor.refunds WHERE status = 'succeeded' AND refund_id = ANY($1)"
        " ORDER BY updated_at",
        refund_ids,
    )
    return [r["updated_at"].timestamp() for r in rows]


async def transactions(database_url: str) -> int:
    """Transactions the database has run (committed or rolled back), as its statistics show."""
    rows = await fetch(
        database_url,
        "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()",
    )
    return int(rows[0]["n"])


def mail_count(mail_dir: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(mail_dir) if entry.name.endswith(".eml"))
    except FileNotFoundError:
        return 0


def emails(mail_dir: Path) -> list[tuple[str, float]]:
    """(Message-ID, when the sink wrote it) of every message at the sink; the sink names files by the time."""
    parser = BytesHeaderParser()
    found = []
    for path in mail_dir.glob("*.eml"):
        message_id = str(parser.parsebytes(path.read_bytes())["Message-ID"])
        written = datetime.strptime(path.name.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        found.append((message_id, written.timestamp()))
    return found


async def email_kinds(database_url: str, message_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Message-ID -> (refund id, kind), from the notifier's record of what it sent."""
    rows = await fetch(
        database_url,
        "SELECT message_id, refund_id, kind FROM notifier.messages WHERE message_id = ANY($1)",
        list(set(message_ids)),
    )
    return {r["message_id"]: (r["refund_id"], r["kind"]) for r in rows}


def provider_refunds(sandbox_url: str) -> Counter[str]:
    """How many refunds the provider holds for each of our refund ids."""
    made = httpx.get(f"{sandbox_url}/v1/_sandbox/refunds", timeout=60).json()["data"]
    return Counter(r["metadata"].get("refund_id", "") for r in made)


async def _offsets(bootstrap: str, prefix: str, keep: Callable[[str], bool]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith(prefix) and keep(t)]
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        return sum(ends[p] - starts[p] for p in partitions)
    finally:
        await consumer.stop()


async def dead_letters(bootstrap: str, prefix: str) -> int:
    return await _offsets(bootstrap, prefix, lambda topic: topic.endswith(".dlq"))


async def records(bootstrap: str, prefix: str) -> int:
    """Every record the stack's topics hold: what was published so far."""
    return await _offsets(bootstrap, prefix, lambda topic: not topic.endswith(".dlq"))


async def wait_until(check: Callable[[], bool], seconds: float, what: str, interval: float = 0.2) -> None:
    async def holds() -> bool:
        return check()

    await wait_until_async(holds, seconds, what, interval)


async def wait_until_async(
    check: Callable[[], Awaitable[bool]], seconds: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {seconds} s")
        await asyncio.sleep(interval)
