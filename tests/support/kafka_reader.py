"""Reads a topic from the beginning, outside any consumer group: what is really on the broker."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """All records of ``topic``, waiting until at least ``expected`` arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.topics()  # loads the cluster metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part_records in batch.values():
                records.extend(part_records)
        # Catch anything beyond the expected count (a duplicate we must see).
        for part_records in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(part_records)
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or ())}


async def dead_letter_of(bootstrap: str, topic: str, event_id: object, *, timeout: float = 30.0) -> dict[str, str]:
    """The headers of the one record of ``event_id`` on ``topic`` (a dead-letter topic), once it is there: other
    tests of a module may park theirs on the same topic, before it or after."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        records = await read_topic(bootstrap, topic, expected=1, timeout=max(left, 0.1))
        mine = [headers_of(r) for r in records if headers_of(r).get("ce_id") == str(event_id)]
        if mine or left <= 0:
            assert len(mine) == 1, f"{len(mine)} records of {event_id} on {topic}"
            return mine[0]
        await asyncio.sleep(0.2)
