"""A record the Kafka client cannot read loses no record and stops only its own partition, loudly.

aiokafka reads each record (its header keys as UTF-8 among the rest) while ``getmany`` hands a fetch out. A record
it cannot read raises there, after the positions of the partitions handed out before it in that call were moved:
their records would go with the exception, and the record's own partition would raise at every fetch. aiokafka
cannot skip it either (it reads the record's whole batch again, whatever the position).

So when ``getmany`` raises so, every partition is sought back to its committed offset (a consumer commits the batch
it handled before it fetches the next, so that is where each stood), each partition with records is read alone, and
the one that raises is read up to the record and paused there (``undecodable_record`` in the log, and the
``refundflow_consumer_undecodable_paused`` gauge): the operator moves the group past it (README, Operating
Refundflow). What was read meanwhile is the batch. A pause lasts until the consumer restarts or the group
rebalances; the next fetch finds the record again and pauses it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, CorruptRecordException, KafkaError

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
ReadBatch = Callable[[AIOKafkaConsumer], Awaitable[tuple[Record, ...]]]

# How long a partition read alone may wait for its records to be fetched again (it returns as soon as they are).
_REFETCH_WAIT_MS = 10_000


def is_unreadable(failure: Exception) -> bool:
    """A record aiokafka could not read while handing it out: it failed decoding (not a KafkaError) or its CRC. A
    stopped consumer is not one (its error is no KafkaError either)."""
    if isinstance(failure, ConsumerStoppedError):
        return False
    return isinstance(failure, CorruptRecordException) or not isinstance(failure, KafkaError)


def read_around_undecodable_records(subscriber: Any) -> None:
    """Have FastStream's batch ``subscriber`` read its batches through ``_read_around`` when ``getmany`` raises for a
    record it cannot read. Its consume loop calls ``get_msg`` once per batch; the normal path is its own call."""
    get_msg: ReadBatch = subscriber.get_msg
    max_records: int | None = subscriber.max_records

    async def read_batch(consumer: AIOKafkaConsumer) -> tuple[Record, ...]:
        try:
            return await get_msg(consumer)
        except Exception as exc:
            if not is_unreadable(exc):
                raise  # FastStream's loop logs and waits out the broker's errors
            return await _read_around(consumer, exc, max_records)

    subscriber.get_msg = read_batch  # on the instance: FastStream's factory picks the subscriber's class itself


async def _read_around(consumer: AIOKafkaConsumer, failure: Exception, max_records: int | None) -> tuple[Record, ...]:
    """The batch read again partition by partition, up to the unreadable record, whose partition is paused.

    Raises ``failure`` again when no partition raises this time (a corrupt copy in transit): every partition is back
    at its committed offset, so nothing is lost, and the next fetch reads on."""
    partitions = sorted(consumer.assignment() - consumer.paused())
    log.warning("fetch_rewound", error=type(failure).__name__, partitions=len(partitions))
    starts = await _back_to_committed(consumer, partitions)
    batch: list[Record] = []
    found = False
    for tp in partitions:
        left = None if max_records is None else max_records - len(batch)
        if left == 0:
            break
        highwater = consumer.highwater(tp)
        if highwater is not None and highwater <= starts[tp]:
            continue  # nothing to read there
        try:
            batch.extend((await consumer.getmany(tp, timeout_ms=_REFETCH_WAIT_MS, max_records=left)).get(tp, []))
        except Exception as exc:
            if not is_unreadable(exc):
                raise
            consumer.seek(tp, starts[tp])  # what aiokafka handed out of it went with the exception
            readable, stopped = await _read_up_to_unreadable(consumer, tp, starts[tp], left)
            batch.extend(readable)
            found = found or stopped
    if not found and not batch:
        raise failure
    return tuple(batch)


async def _back_to_committed(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition sought back to its committed offset (never committed: its first record, as the subscriber's
    ``auto_offset_reset="earliest"`` reads it); returns where each now is. The committed offsets are waited for:
    until every partition is back, nothing else may fetch."""
    attempt = 0
    while True:
        try:
            committed: dict[TopicPartition, int | None] = {tp: await consumer.committed(tp) for tp in partitions}
            break
        except ConsumerStoppedError:
            raise
        except KafkaError as exc:
            attempt += 1
            log.warning("committed_offsets_unavailable", attempt=attempt, error=repr(exc))
            await asyncio.sleep(min(attempt, 5))
    for tp, offset in committed.items():
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
    return {tp: await consumer.position(tp) for tp in partitions}


async def _read_up_to_unreadable(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, limit: int | None
) -> tuple[list[Record], bool]:
    """``tp``'s records one at a time from ``start`` (one at a time: a read that raises loses what it read), up to
    the one that cannot be read, where ``tp`` is paused; and whether it was found (not within ``limit``, or it was
    read this time: it is not paused)."""
    readable: list[Record] = []
    while limit is None or len(readable) < limit:
        try:
            records = (await consumer.getmany(tp, timeout_ms=_REFETCH_WAIT_MS, max_records=1)).get(tp, [])
        except Exception as exc:
            if not is_unreadable(exc):
                raise
            offset = readable[-1].offset + 1 if readable else start
            consumer.seek(tp, offset)  # it stays the next record to read, once the operator moved past it
            consumer.pause(tp)
            log.error(
                "undecodable_record",
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                error=type(exc).__name__,
                action="partition paused: move the consumer group past this record (README runbook)",
            )
            return readable, True
        if not records:
            break
        readable.extend(records)
    return readable, False
