"""A record aiokafka itself cannot read (a header key that is not UTF-8) loses nothing and stops only its partition.

aiokafka decodes header keys as UTF-8 while it hands a fetch out, and raises inside ``getmany`` after it moved the
positions of the partitions it had already handed out in that call: their records were thrown away with the
exception, and lost for good once a later record there committed; the record's own partition stalled, silently.
The record is written as a hostile producer could: a batch built by aiokafka's own builder, its header key bytes
overwritten and its CRC made right again.
"""

from __future__ import annotations

import contextlib
import json
import struct
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.record.util import calc_crc32c
from fastapi import FastAPI

from refundflow_shared.events import Event, topic_for
from refundflow_shared.kafka_topics import ensure_service_topics
from refundflow_shared.metrics_endpoint import metrics_router
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.metrics_scrape import parse
from tests.support.probe_service import eventually, probe_settings, refund_requested, start_probe
from tests.support.raw_records import RawRecord, produce, raw_headers

PARTITIONS = 4
BAD_PARTITION = PARTITIONS - 1  # handed out last by the broker: the others were drained before aiokafka raised
CRC_AT, CRC_COVERS_FROM = 17, 21  # a record batch (v2): where its CRC-32C is, where what it covers starts


def good_event(n: int) -> Event:
    return Event.wrap(refund_requested(f"pay_{uuid.uuid4().hex[:8]}", n), source="refundflow/test", sequence=1)


async def produce_undecodable(bootstrap: str, topic: str, partition: int) -> None:
    """One record whose header key is b"\\xff\\xfe", in a batch whose CRC is right: the broker stores it as it is."""
    event = good_event(99)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        batch.append(
            key=b"pay_bad", value=event.kafka_value(), timestamp=None, headers=[*raw_headers(event), ("zz", b"1")]
        )
        buffer = batch._build()  # the bytes send_batch sends
        assert buffer.count(b"zz") == 1
        at = buffer.find(b"zz")
        buffer[at : at + 2] = b"\xff\xfe"
        crc = calc_crc32c(bytes(buffer[CRC_COVERS_FROM:]))
        struct.pack_into(">I", buffer, CRC_AT, crc)
        await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


async def handled_times(runtime: ServiceRuntime, events: list[Event]) -> dict[int, int]:
    """How many effects each event has, by its index in ``events``."""
    rows = await runtime.pool.fetch(
        "SELECT event_id, count(*) AS n FROM effects WHERE event_id = ANY($1::uuid[]) GROUP BY event_id",
        [event.id for event in events],
    )
    counts = {row["event_id"]: row["n"] for row in rows}
    return {i: counts.get(event.id, 0) for i, event in enumerate(events)}


async def committed(settings: ServiceSettings, tp: TopicPartition) -> int | None:
    """The probe group's committed offset, read from outside the group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}probe", partitions=[tp])
    finally:
        await admin.close()
    return offsets[tp].offset if tp in offsets else None


async def paused_gauge(runtime: ServiceRuntime, topic: str) -> float:
    app = FastAPI()
    app.include_router(metrics_router(runtime.refresh_metrics))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        response = await client.get("/metrics")
    return parse(response.text).value(
        "refundflow_consumer_undecodable_paused", service="probe", topic=topic, partition=str(BAD_PARTITION)
    )


async def test_an_undecodable_record_loses_no_record_and_stops_only_its_partition(
    postgres_url: str, kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = probe_settings(
        await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.", topic_partitions=PARTITIONS
    )
    topic = topic_for("refund.requested", settings.topic_prefix)
    await ensure_service_topics(settings)
    # Everything is on the broker before the consumer starts, so one fetch brings it all.
    others = [good_event(n) for n in range(1, 3 * (PARTITIONS - 1) + 1)]  # amounts from 1: a refund of 0 is invalid
    before_bad, after_bad = good_event(100), good_event(101)
    await produce(
        kafka_bootstrap,
        [
            *(
                RawRecord(topic, b"k", raw_headers(e), e.kafka_value(), partition=n % (PARTITIONS - 1))
                for n, e in enumerate(others)
            ),
            RawRecord(topic, b"k", raw_headers(before_bad), before_bad.kafka_value(), partition=BAD_PARTITION),
        ],
    )
    await produce_undecodable(kafka_bootstrap, topic, BAD_PARTITION)  # at offset 1
    await produce(
        kafka_bootstrap,
        [RawRecord(topic, b"k", raw_headers(after_bad), after_bad.kafka_value(), partition=BAD_PARTITION)],
    )

    runtime = await start_probe(settings)
    try:

        async def all_before_it_handled() -> bool:
            return all((await handled_times(runtime, [*others, before_bad])).values())

        with contextlib.suppress(AssertionError):  # what is lost is named below
            await eventually(all_before_it_handled, timeout=30)
        times = await handled_times(runtime, others)
        lost = [n for n, count in times.items() if count == 0]
        assert not lost, f"records of the other partitions were lost: {lost} of {len(others)}"
        assert set(times.values()) == {1}, "each is handled exactly once"
        assert (await handled_times(runtime, [before_bad, after_bad])) == {0: 1, 1: 0}, (
            "the bad partition is handled up to the undecodable record, and stops there"
        )
        assert await committed(settings, TopicPartition(topic, BAD_PARTITION)) == 1, (
            "what follows the undecodable record stays on the broker, for after the operator moves the group past it"
        )

        async def gauge_shows_it() -> bool:
            return await paused_gauge(runtime, topic) == 1

        await eventually(gauge_shows_it, timeout=10)

        # The other partitions carry on.
        more = good_event(300)
        await produce(kafka_bootstrap, [RawRecord(topic, b"k", raw_headers(more), more.kafka_value(), partition=0)])

        async def more_handled() -> bool:
            return (await handled_times(runtime, [more]))[0] == 1

        await eventually(more_handled, timeout=30)
    finally:
        await runtime.stop()

    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    undecodable = [line for line in lines if line.get("event") == "undecodable_record"]
    assert undecodable, "the undecodable record is logged"
    assert all(line["level"] == "error" for line in undecodable)
    assert {(line["topic"], line["partition"], line["offset"]) for line in undecodable} == {(topic, BAD_PARTITION, 1)}
    assert not [line for line in undecodable if "pay_" in json.dumps(line)], "no record content is logged"
