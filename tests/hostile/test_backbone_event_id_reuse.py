"""An event id reused with another event type, or with another message of its type, is dead-lettered
(``event_id_reused``), never taken for a duplicate.

The inbox keeps each id with the type it was handled as and a digest of its message (source, key, value): another
event under that id is not the same event delivered again, so skipping it silently would lose it. The consumer here
handles two types, as every Refundflow service does; the records are written as a hostile (or buggy) producer would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from refundflow_shared.event_contract import ServiceContract
from refundflow_shared.events import Event, EventType, PaymentDisputed, RefundRequested, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.probe_service import (
    PROBE,
    PROBE_CONTRACT,
    PROBE_MIGRATIONS,
    eventually,
    probe_settings,
    refund_requested,
)
from tests.support.raw_records import TAG, DeadLetters, RawRecord, produce, raw_headers

TWO_TYPES = ServiceContract(
    PROBE,
    consumes={EventType.REFUND_REQUESTED: "records an effect", EventType.PAYMENT_DISPUTED: "records an effect"},
    publishes=PROBE_CONTRACT.publishes,
)


ALONE = "pay_alone_"


@dataclass
class Probe:
    settings: ServiceSettings
    runtime: ServiceRuntime
    dead: DeadLetters

    def topic(self, event_type: str) -> str:
        return topic_for(event_type, self.settings.topic_prefix)

    async def effects_of(self, event_id: uuid.UUID) -> list[str]:
        """The type of each effect recorded for ``event_id``."""
        rows = await self.runtime.pool.fetch("SELECT instance FROM effects WHERE event_id = $1 ORDER BY id", event_id)
        return [row["instance"] for row in rows]

    async def handled(self, event: Event) -> bool:
        return await self.effects_of(event.id) == [event.type.value]


@pytest.fixture(scope="module")
async def probe(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Probe]:
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    runtime = ServiceRuntime(PROBE, settings, PROBE_MIGRATIONS, TWO_TYPES)
    await runtime.open()

    async def fail_batches_of_alone(conn: asyncpg.Connection, events: list[Event]) -> None:
        """A "pay_alone_" payment's events fail together, so they are handled one by one (each in its own
        transaction), as after any batch failure."""
        if sum(event.partition_key.startswith(ALONE) for event in events) > 1:
            raise RuntimeError("handled together")

    async def record_effect(
        conn: asyncpg.Connection, event: Event, data: RefundRequested | PaymentDisputed, _: None
    ) -> None:
        await conn.execute(
            "INSERT INTO effects (event_id, payment_id, sequence, instance) VALUES ($1, $2, $3, $4)",
            event.id,
            data.payment_id,
            event.sequence,
            event.type.value,  # which of the two types was applied
        )

    runtime.consumer.handles(RefundRequested, prepare=fail_batches_of_alone)(record_effect)
    runtime.consumer.handles(PaymentDisputed, prepare=fail_batches_of_alone)(record_effect)
    await runtime.start()
    dead = DeadLetters(
        kafka_bootstrap,
        [dlq_topic(topic_for(t, settings.topic_prefix)) for t in ("refund.requested", "payment.disputed")],
    )
    await dead.start()
    try:
        yield Probe(settings, runtime, dead)
    finally:
        await dead.stop()
        await runtime.stop()


def disputed(payment_id: str, event_id: uuid.UUID | None = None) -> Event:
    data = PaymentDisputed(payment_id=payment_id, merchant_id="mer_probe")
    event = Event.wrap(data, source="refundflow/test", sequence=1)
    return event.model_copy(update={"id": event_id}) if event_id else event


def requested(payment_id: str, event_id: uuid.UUID | None = None, n: int = 1) -> Event:
    event = Event.wrap(refund_requested(payment_id, n), source="refundflow/test", sequence=n)
    return event.model_copy(update={"id": event_id}) if event_id else event


def record(probe: Probe, event: Event, tag: str | None = None) -> RawRecord:
    headers = raw_headers(event) + ([(TAG, tag.encode())] if tag else [])
    return RawRecord(probe.topic(event.type.value), event.partition_key.encode(), headers, event.kafka_value())


async def test_an_event_id_handled_before_as_another_type_is_dead_lettered_and_the_next_event_is_handled(
    probe: Probe,
) -> None:
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    first = disputed(payment)
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, first)])
    await eventually(lambda: probe.handled(first), timeout=60)

    reused = requested(payment, first.id)
    behind = requested(payment, n=2)  # same payment, so same partition number: it waits behind the reused one
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, reused, "reused"), record(probe, behind)])

    await eventually(lambda: probe.handled(behind), timeout=60)
    dead = (await probe.dead.wait_for([b"reused"], timeout=30))[b"reused"]
    assert dead["dlq_reason"] == "event_id_reused"
    assert "payment.disputed" in dead["dlq_error"], "it says what the id was handled as"
    assert dead["dlq_original_topic"] == probe.topic("refund.requested")
    assert await probe.effects_of(first.id) == ["payment.disputed"], "the reused id's event was not applied"


async def test_an_event_id_reused_with_another_type_in_the_same_batch_is_applied_once_and_dead_lettered_once(
    probe: Probe,
) -> None:
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    event_id = uuid.uuid4()
    one, other = requested(payment, event_id), disputed(payment, event_id)
    behind = requested(payment, n=2)
    records = [record(probe, one, "same-batch"), record(probe, other, "same-batch"), record(probe, behind)]
    await produce(probe.settings.kafka_bootstrap_servers, records)

    await eventually(lambda: probe.handled(behind), timeout=60)
    await probe.dead.wait_for([b"same-batch"], timeout=30)
    [dead] = probe.dead.records[b"same-batch"]
    [applied] = await probe.effects_of(event_id)
    dead_topic = {
        "refund.requested": probe.topic("payment.disputed"),
        "payment.disputed": probe.topic("refund.requested"),
    }
    assert dead.topic == dlq_topic(dead_topic[applied]), "the one not applied is the one dead-lettered"
    assert dict(dead.headers)["dlq_reason"] == b"event_id_reused"


async def test_an_event_delivered_again_with_its_own_type_is_still_skipped_without_a_dead_letter(probe: Probe) -> None:
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    event = requested(payment)
    behind = requested(payment, n=2)
    await produce(
        probe.settings.kafka_bootstrap_servers,
        [record(probe, event, "true-duplicate"), record(probe, event, "true-duplicate"), record(probe, behind)],
    )

    await eventually(lambda: probe.handled(behind), timeout=60)
    await asyncio.sleep(1)  # time for a dead letter, were there one, to arrive
    assert await probe.effects_of(event.id) == ["refund.requested"]
    assert b"true-duplicate" not in probe.dead.records


async def test_an_event_id_reused_with_another_type_is_dead_lettered_when_events_are_handled_one_by_one(
    probe: Probe,
) -> None:
    payment = f"{ALONE}{uuid.uuid4().hex[:8]}"
    event_id = uuid.uuid4()
    one, other = requested(payment, event_id), disputed(payment, event_id)
    again, behind = requested(payment, event_id), requested(payment, n=2)
    records = [record(probe, e, "one-by-one") for e in (one, other, again)] + [record(probe, behind)]
    await produce(probe.settings.kafka_bootstrap_servers, records)

    await eventually(lambda: probe.handled(behind), timeout=60)
    await probe.dead.wait_for([b"one-by-one"], timeout=30)
    [applied] = await probe.effects_of(event_id)
    # Two topics: a poll may hand out either first. The type applied first owns the id; every record of the other
    # type is dead-lettered (the disputed one; or both requested ones, the second no duplicate of what was applied).
    not_applied = "payment.disputed" if applied == "refund.requested" else "refund.requested"
    expected = 1 if applied == "refund.requested" else 2

    async def all_dead() -> bool:
        return len(probe.dead.records[b"one-by-one"]) >= expected

    await eventually(all_dead, timeout=30)
    await asyncio.sleep(1)  # time for one more dead letter, were there one, to arrive
    dead = probe.dead.records[b"one-by-one"]
    assert len(dead) == expected
    assert {d.topic for d in dead} == {dlq_topic(probe.topic(not_applied))}
    assert {dict(d.headers)["dlq_reason"] for d in dead} == {b"event_id_reused"}


async def test_an_event_id_reused_with_another_message_of_its_type_is_dead_lettered(probe: Probe) -> None:
    """The inbox compared only the type: another refund's event under a handled id was skipped as a duplicate."""
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    first = requested(payment)
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, first)])
    await eventually(lambda: probe.handled(first), timeout=60)

    other_payment = f"pay_{uuid.uuid4().hex[:8]}"
    other = requested(other_payment, first.id)  # another payment's refund, under the first one's id and type
    behind = requested(other_payment, n=2)
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, other, "other-body"), record(probe, behind)])

    await eventually(lambda: probe.handled(behind), timeout=60)
    dead = (await probe.dead.wait_for([b"other-body"], timeout=30))[b"other-body"]
    assert dead["dlq_reason"] == "event_id_reused"
    assert "another message" in dead["dlq_error"]
    assert await probe.effects_of(first.id) == ["refund.requested"]


async def test_an_event_id_reused_with_another_message_in_the_same_batch_is_applied_once_and_dead_lettered_once(
    probe: Probe,
) -> None:
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    event_id = uuid.uuid4()
    one, other = requested(payment, event_id), requested(payment, event_id, n=3)  # another refund of the payment
    behind = requested(payment, n=2)
    records = [record(probe, one), record(probe, other, "batch-body"), record(probe, behind)]
    await produce(probe.settings.kafka_bootstrap_servers, records)

    await eventually(lambda: probe.handled(behind), timeout=60)
    dead = (await probe.dead.wait_for([b"batch-body"], timeout=30))[b"batch-body"]
    assert dead["dlq_reason"] == "event_id_reused"
    assert await probe.effects_of(event_id) == ["refund.requested"]


async def test_an_event_handled_before_digests_were_kept_is_still_taken_for_a_duplicate(probe: Probe) -> None:
    payment = f"pay_{uuid.uuid4().hex[:8]}"
    first = requested(payment)
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, first)])
    await eventually(lambda: probe.handled(first), timeout=60)
    await probe.runtime.pool.execute("UPDATE inbox SET digest = NULL WHERE event_id = $1", first.id)

    other, behind = requested(payment, first.id, n=3), requested(payment, n=2)
    await produce(probe.settings.kafka_bootstrap_servers, [record(probe, other, "no-digest"), record(probe, behind)])

    await eventually(lambda: probe.handled(behind), timeout=60)
    await asyncio.sleep(1)  # time for a dead letter, were there one, to arrive
    assert b"no-digest" not in probe.dead.records, "an inbox row without a digest cannot tell: taken as matching"
