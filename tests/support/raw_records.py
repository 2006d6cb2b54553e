"""Records as anyone with access to the broker could write them, and a reader that watches dead-letter topics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from refundflow_shared.events import Event

RawHeaders = list[tuple[str, bytes | None]]
# A header tests add to the records they write, to find each one again on a dead-letter topic.
TAG = "x-test-tag"


@dataclass(frozen=True)
class RawRecord:
    topic: str
    key: bytes
    headers: RawHeaders
    value: bytes | None
    partition: int | None = None  # None: the key's, as every producer picks it


def raw_headers(event: Event) -> RawHeaders:
    return [(k, v.encode()) for k, v in event.kafka_headers().items()]


async def produce(bootstrap: str, records: Iterable[RawRecord]) -> None:
    """Write the records as they are (headers without values or not UTF-8 included), in order, acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=record.headers, partition=record.partition
            )
    finally:
        await producer.stop()


@dataclass
class DeadLetters:
    """Every record that reaches the watched dead-letter topics, by tag (else key), read outside any group."""

    bootstrap: str
    topics: list[str]
    records: dict[bytes, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024
        )
        await consumer.start()
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p) for topic in self.topics for p in consumer.partitions_for_topic(topic) or {0}
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._collect(consumer))

    async def _collect(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        self.records.setdefault(tag_of(record), []).append(record)
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, keys: Iterable[bytes], timeout: float = 60.0) -> dict[bytes, dict[str, str]]:
        """The dead-letter headers of each key, once every key arrived (fails the test after ``timeout``)."""
        wanted = set(keys)
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= self.records.keys():
            if self._task is not None and self._task.done():
                self._task.result()  # the reader died: show why
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not dead-lettered within {timeout}s: {sorted(wanted - self.records.keys())}")
            await asyncio.sleep(0.05)
        return {key: dlq_headers(self.records[key][0]) for key in wanted}


def tag_of(record: ConsumerRecord[bytes, bytes]) -> bytes:
    tags = [value for name, value in record.headers or () if name == TAG]
    return tags[0] or b"" if tags else record.key or b""


def dlq_headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in (record.headers or ())}
