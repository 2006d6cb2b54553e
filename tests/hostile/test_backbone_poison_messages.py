"""Poison records never stop a consumer: each goes to ``<topic>.dlq`` with its reason, and the next is handled.

Review finding 6 (a body `json.loads` cannot read without ValueError/RecursionError was NACKed and re-read forever)
and 25.2 (a header without a value, or not UTF-8, broke FastStream's own parser before our code ran, and the next
commit skipped it silently). The records are written with aiokafka exactly as a hostile producer would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from refundflow_shared.events import Event, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.probe_service import eventually, probe_settings, refund_requested, start_probe
from tests.support.raw_records import TAG, DeadLetters, RawHeaders, RawRecord, dlq_headers, produce, raw_headers

MAX_EVENT_BYTES = 64 * 1024


@dataclass
class Probe:
    settings: ServiceSettings
    runtime: ServiceRuntime
    dead: DeadLetters

    @property
    def topic(self) -> str:
        return topic_for("refund.requested", self.settings.topic_prefix)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    async def handled(self, event: Event) -> bool:
        return bool(await self.pool.fetchval("SELECT count(*) = 1 FROM effects WHERE event_id = $1", event.id))


@pytest.fixture(scope="module")
async def probe(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Probe]:
    settings = probe_settings(
        await create_database(postgres_url),
        kafka_bootstrap,
        f"t{uuid.uuid4().hex[:10]}.",
        event_max_bytes=MAX_EVENT_BYTES,
    )
    runtime = await start_probe(settings)
    dead = DeadLetters(kafka_bootstrap, [dlq_topic(topic_for("refund.requested", settings.topic_prefix))])
    await dead.start()
    try:
        yield Probe(settings, runtime, dead)
    finally:
        await dead.stop()
        await runtime.stop()


async def fire(probe: Probe, poison: Mapping[str, tuple[RawHeaders, bytes | None]]) -> dict[str, dict[str, str]]:
    """Write each poison record, then a good event of the same payment (so the same partition, behind them);
    returns each poison record's dead-letter headers once the good event was handled."""
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    good = Event.wrap(refund_requested(payment), source="refundflow/test", sequence=1)
    key = payment.encode()
    records = [RawRecord(probe.topic, key, [*h, (TAG, name.encode())], v) for name, (h, v) in poison.items()]
    records.append(RawRecord(probe.topic, key, raw_headers(good), good.kafka_value()))
    await produce(probe.settings.kafka_bootstrap_servers, records)

    await eventually(lambda: probe.handled(good), timeout=60)
    found = await probe.dead.wait_for([name.encode() for name in poison])
    return {key.decode(): headers for key, headers in found.items()}


def good_envelope() -> tuple[RawHeaders, bytes]:
    event = Event.wrap(refund_requested(f"pay_{uuid.uuid4().hex[:8]}"), source="refundflow/test", sequence=1)
    return raw_headers(event), event.kafka_value()


def replaced(headers: RawHeaders, name: str, value: bytes | None) -> RawHeaders:
    return [(k, value if k == name else v) for k, v in headers]


async def test_headers_without_a_value_or_not_utf8_are_dead_lettered_and_the_next_event_is_handled(
    probe: Probe,
) -> None:
    headers, value = good_envelope()
    poison = {
        "id-without-value": (replaced(headers, "ce_id", None), value),
        "source-not-utf8": (replaced(headers, "ce_source", b"\xff\xfe refundflow"), value),
        "extra-header-without-value": ([*headers, ("traceparent", None)], value),
        "repeated-id": ([*headers, ("ce_id", str(uuid.uuid4()).encode())], value),
    }
    dead = await fire(probe, poison)

    assert {name: h["dlq_reason"] for name, h in dead.items()} == dict.fromkeys(poison, "malformed_headers")
    assert "ce_id" in dead["id-without-value"]["dlq_error"]
    assert dead["source-not-utf8"]["dlq_original_topic"] == probe.topic


async def test_bodies_json_cannot_read_are_dead_lettered_and_the_next_event_is_handled(probe: Probe) -> None:
    headers, _ = good_envelope()
    poison = {
        "integer-of-5000-digits": (headers, b'{"amount": ' + b"1" * 5000 + b"}"),
        "nested-20000-deep": (headers, b"[" * 20_000 + b"]" * 20_000),
        "not-utf8": (headers, b'{"refund_id": "\xff"}'),
        "no-body": (headers, None),
        "over-the-size-cap": (headers, json.dumps({"refund_id": "r" * MAX_EVENT_BYTES}).encode()),
    }
    dead = await fire(probe, poison)

    assert {name: h["dlq_reason"] for name, h in dead.items()} == {
        "integer-of-5000-digits": "malformed_json",
        "nested-20000-deep": "malformed_json",
        "not-utf8": "malformed_json",
        "no-body": "malformed_json",
        "over-the-size-cap": "event_too_large",
    }
    assert len(probe.dead.records[b"over-the-size-cap"][0].value or b"") > MAX_EVENT_BYTES, "the body is kept"


async def test_bad_cloudevents_attributes_are_dead_lettered_and_the_next_event_is_handled(probe: Probe) -> None:
    headers, value = good_envelope()
    poison = {
        "sequence-of-5000-digits": (replaced(headers, "ce_sequence", b"1" * 5000), value),
        "sequence-zero": (replaced(headers, "ce_sequence", b"0"), value),
        "time-not-a-time": (replaced(headers, "ce_time", b"yesterday"), value),
        "id-not-a-uuid": (replaced(headers, "ce_id", b"42"), value),
        "another-type": (replaced(headers, "ce_type", b"refund.approved"), value),
        "no-headers-at-all": ([], value),
    }
    dead = await fire(probe, poison)

    assert {name: h["dlq_reason"] for name, h in dead.items()} == {
        "sequence-of-5000-digits": "invalid_attributes",
        "sequence-zero": "invalid_attributes",
        "time-not-a-time": "invalid_attributes",
        "id-not-a-uuid": "invalid_attributes",
        "another-type": "unexpected_event_type",
        "no-headers-at-all": "missing_attributes",
    }


async def test_a_dead_letter_names_the_invalid_fields_but_never_their_values(probe: Probe) -> None:
    headers, value = good_envelope()
    payload = {**json.loads(value), "customer_email": {"name": "Ada Lovelace"}, "amount": "ada@example.com"}
    dead = await fire(probe, {"customer-data": (headers, json.dumps(payload).encode())})

    error = dead["customer-data"]["dlq_error"]
    assert dead["customer-data"]["dlq_reason"] == "validation_failed"
    assert "customer_email" in error
    assert "amount" in error
    assert "Ada" not in error
    assert "ada@example.com" not in error


async def test_a_record_too_large_to_carry_to_the_dlq_is_parked_without_its_body(probe: Probe) -> None:
    headers, _ = good_envelope()
    # 100 bytes under what a producer takes (1 MiB): room for the record, not for the dead-letter headers.
    framing = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"pay_12345678", b"", [*headers, (TAG, b"x" * 18)])
    almost_a_mebibyte = b"x" * (1024 * 1024 - 100 - framing)
    dead = await fire(probe, {"too-large-to-carry": (headers, almost_a_mebibyte)})

    assert dead["too-large-to-carry"]["dlq_reason"] == "event_too_large"
    assert "too large to carry" in dead["too-large-to-carry"]["dlq_dropped"]
    assert probe.dead.records[b"too-large-to-carry"][0].value in (b"", None)


async def test_a_key_too_large_to_carry_to_the_dlq_is_dropped_and_the_next_event_is_handled(probe: Probe) -> None:
    """A key of almost a mebibyte fits the record, not the record and the dead-letter headers: parked without it,
    the partition goes on (waiting for a broker that can never take it stalled the partition for good)."""
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    good = Event.wrap(refund_requested(payment), source="refundflow/test", sequence=1)
    partitions = list(range(probe.settings.topic_partitions))
    partition = DefaultPartitioner()(payment.encode(), partitions, partitions)  # the good event's: poison first
    headers: RawHeaders = [(TAG, b"key-too-large-to-carry")]
    framing = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"", b"", headers)
    huge_key = b"k" * (1024 * 1024 - 100 - framing)
    await produce(
        probe.settings.kafka_bootstrap_servers,
        [
            RawRecord(probe.topic, huge_key, headers, None, partition=partition),
            RawRecord(probe.topic, payment.encode(), raw_headers(good), good.kafka_value()),
        ],
    )

    await eventually(lambda: probe.handled(good), timeout=60)

    async def parked() -> bool:
        letters = [dlq_headers(r) for records in probe.dead.records.values() for r in records]
        return any(
            h.get("dlq_original_partition") == str(partition) and "key" in h.get("dlq_dropped", "") for h in letters
        )

    await eventually(parked, timeout=30)
