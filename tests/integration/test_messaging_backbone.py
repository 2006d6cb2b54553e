"""The outbox, the inbox and the consumer, proven against a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from refundflow_shared.consumer import EventConsumer, TransientError
from refundflow_shared.database import create_pool
from refundflow_shared.event_contract import ServiceContract
from refundflow_shared.events import (
    Event,
    PaymentSucceeded,
    RefundApproved,
    RefundRequested,
    RefundSucceeded,
    dlq_topic,
    topic_for,
)
from refundflow_shared.kafka_topics import ensure_service_topics
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.outbox import OutboxRelay, add_event, add_events, events_insert
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.structured_logging import render_exceptions
from tests.support.kafka_reader import headers_of, read_topic
from tests.support.probe_service import (
    PROBE,
    PROBE_CONTRACT,
    PROBE_MIGRATIONS,
    eventually,
    probe_settings,
    refund_requested,
    stage_events,
    start_probe,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> ServiceSettings:
    return probe_settings(database_url, kafka_bootstrap, topic_prefix)


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(settings.database_url, PROBE, PROBE_MIGRATIONS)
    pool = await create_pool(settings.database_url, PROBE)
    yield pool
    await pool.close()


@pytest.fixture
async def running() -> AsyncIterator[list[ServiceRuntime]]:
    """Probe services started by a test, stopped after it."""
    runtimes: list[ServiceRuntime] = []
    yield runtimes
    for runtime in runtimes:
        await runtime.stop()


def requested_topic(settings: ServiceSettings) -> str:
    return topic_for("refund.requested", settings.topic_prefix)


async def effects(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM effects ORDER BY id"))


def run_probe_process(mode: str, settings: ServiceSettings, crash_at: str, timeout: float = 90) -> int:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "REFUNDFLOW_CRASH_AT": crash_at,
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.run_probe", mode], env=env, cwd=ROOT, timeout=timeout, check=False
    )
    return result.returncode


async def test_an_event_is_staged_only_if_its_state_change_commits(pool: asyncpg.Pool) -> None:
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, refund_requested("pay_rolled_back"), source="refundflow/probe")
            raise RuntimeError("the state change failed")
    await stage_events(pool, [refund_requested("pay_committed")])

    keys = [r["partition_key"] for r in await pool.fetch("SELECT partition_key FROM outbox")]
    assert keys == ["pay_committed"]


async def test_each_payment_gets_its_own_gap_free_sequence(pool: asyncpg.Pool) -> None:
    staged = await stage_events(
        pool, [refund_requested("pay_a", 1), refund_requested("pay_b", 1), refund_requested("pay_a", 2)]
    )
    assert [(e.partition_key, e.sequence) for e in staged] == [("pay_a", 1), ("pay_b", 1), ("pay_a", 2)]


async def test_events_staged_together_take_their_keys_next_numbers_in_order(pool: asyncpg.Pool) -> None:
    await stage_events(pool, [refund_requested("pay_c", 1)])
    together = [refund_requested("pay_c", 2), refund_requested("pay_d", 1), refund_requested("pay_c", 3)]
    async with pool.acquire() as conn, conn.transaction():
        staged = await add_events(conn, together, source=PROBE_CONTRACT.source)
    assert [(e.partition_key, e.sequence) for e in staged] == [("pay_c", 2), ("pay_d", 1), ("pay_c", 3)]
    rows = await pool.fetch(
        "SELECT event_id, headers ->> 'ce_sequence' AS sequence FROM outbox WHERE partition_key = 'pay_c' ORDER BY id"
    )  # the relay publishes in id order: a key's rows are in the order they were given
    assert [(row["event_id"], row["sequence"]) for row in rows][1:] == [
        (e.id, str(e.sequence)) for e in staged if e.partition_key == "pay_c"
    ]


async def test_events_staged_with_a_change_that_did_not_happen_are_not_staged_nor_numbered(pool: asyncpg.Pool) -> None:
    for changed in (False, True):
        staging, args = events_insert(
            [refund_requested("pay_e", 1)], source=PROBE_CONTRACT.source, first=2, only_if="$1::bool"
        )
        await pool.execute(f"WITH {staging} SELECT", changed, *args)
    rows = await pool.fetch("SELECT headers ->> 'ce_sequence' AS sequence FROM outbox WHERE partition_key = 'pay_e'")
    assert [row["sequence"] for row in rows] == ["1"]


async def test_relay_publishes_cloudevents_keyed_by_payment_and_marks_them_sent(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    runtime = await start_probe(settings, consume=False)
    running.append(runtime)
    [event] = await stage_events(pool, [refund_requested("pay_relay")])

    [record] = await read_topic(settings.kafka_bootstrap_servers, requested_topic(settings), expected=1)
    headers = headers_of(record)
    assert record.key == b"pay_relay"
    assert headers["ce_id"] == str(event.id)
    assert headers["ce_type"] == "refund.requested"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_source"] == "refundflow/probe"
    assert headers["ce_sequence"] == "1"
    assert json.loads(record.value or b"")["refund_id"] == "ref_pay_relay_1"
    await eventually(lambda: _all_sent(pool))


async def _all_sent(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"))


async def test_relay_is_woken_by_the_commit_not_by_polling(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    slow_poll = settings.model_copy(update={"outbox_poll_interval_seconds": 600.0})
    running.append(await start_probe(slow_poll, consume=False))
    # The relay's start-up pass relays whatever is staged before it, NOTIFY or not: the test's event must come
    # after that pass. A first event, relayed (by that pass or by a NOTIFY), shows the pass is over; from then on
    # only a NOTIFY wakes the relay before its next poll, ten minutes away.
    await stage_events(pool, [refund_requested("pay_notified", 1)])
    await eventually(lambda: _all_sent(pool), timeout=20)

    await stage_events(pool, [refund_requested("pay_notified", 2)])

    records = await read_topic(settings.kafka_bootstrap_servers, requested_topic(settings), expected=2, timeout=20)
    assert [headers_of(r)["ce_sequence"] for r in records] == ["1", "2"]


async def test_relay_crash_after_broker_ack_redelivers_but_the_effect_happens_once(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    staged = await stage_events(pool, [refund_requested("pay_crash", n) for n in (1, 2, 3)])

    # The relay publishes, the broker acknowledges, and the process dies before marking rows sent.
    assert run_probe_process("relay", settings, crash_at="outbox.after_publish") == -9
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 3

    runtime = await start_probe(settings)  # a new relay and a consumer
    running.append(runtime)
    await eventually(lambda: _all_sent(pool))
    records = await read_topic(settings.kafka_bootstrap_servers, requested_topic(settings), expected=6)
    assert len(records) == 6, "each event is on the topic twice"
    await eventually(lambda: _count(pool, "SELECT count(*) FROM inbox", 3))
    await asyncio.sleep(1)  # time for any duplicate effect to show

    rows = await effects(pool)
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in staged)


async def _count(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return bool(await pool.fetchval(sql) == expected)


async def test_an_event_delivered_twice_has_one_effect(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    running.append(await start_probe(settings))
    event = Event.wrap(refund_requested("pay_twice"), source="refundflow/probe", sequence=1)
    await _produce(settings, requested_topic(settings), event.kafka_headers(), event.kafka_value(), key=b"pay_twice")
    await _produce(settings, requested_topic(settings), event.kafka_headers(), event.kafka_value(), key=b"pay_twice")
    marker = Event.wrap(refund_requested("pay_twice", 2), source="refundflow/probe", sequence=2)
    await _produce(settings, requested_topic(settings), marker.kafka_headers(), marker.kafka_value(), key=b"pay_twice")

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects WHERE sequence = 2", 1))
    assert [r["event_id"] for r in await effects(pool)] == [event.id, marker.id]


async def _produce(
    settings: ServiceSettings, topic: str, headers: dict[str, str], value: bytes, key: bytes = b"k"
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
    finally:
        await producer.stop()


async def test_a_poison_message_goes_to_the_dlq_with_its_error_and_the_next_is_handled(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    running.append(await start_probe(settings))
    topic = requested_topic(settings)
    good = Event.wrap(refund_requested("pay_poison"), source="refundflow/probe", sequence=1)
    headers = good.kafka_headers()
    poison = {
        "malformed_json": (headers, b"{not json"),
        "unknown_schema_version": ({**headers, "ce_dataschema": "urn:refundflow:refund.requested:v9"}, b"{}"),
        "validation_failed": ({**headers, "ce_id": str(uuid.uuid4())}, json.dumps({"amount": -1}).encode()),
        "unknown_event_type": ({**headers, "ce_type": "refund.teleported"}, good.kafka_value()),
        "missing_attributes": ({"content-type": "application/json"}, good.kafka_value()),
    }
    for bad_headers, value in poison.values():
        await _produce(settings, topic, bad_headers, value, key=b"pay_poison")
    await _produce(settings, topic, headers, good.kafka_value(), key=b"pay_poison")

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 1))
    dead = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), expected=len(poison))
    reasons = sorted(headers_of(r)["dlq_reason"] for r in dead)
    assert reasons == sorted(poison)
    malformed = next(r for r in dead if headers_of(r)["dlq_reason"] == "malformed_json")
    assert malformed.value == b"{not json"
    assert headers_of(malformed)["ce_id"] == str(good.id), "the original headers travel with it"
    assert headers_of(malformed)["dlq_original_topic"] == topic
    assert headers_of(malformed)["dlq_error"]


async def test_a_transient_failure_is_retried_then_handled_once(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    calls: list[uuid.UUID] = []

    async def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) <= 2:
            raise TransientError("the dependency hiccupped")

    running.append(await start_probe(settings, before_effect=flaky))
    [event] = await stage_events(pool, [refund_requested("pay_flaky")])

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 1))
    assert calls == [event.id] * 3


async def test_a_failure_that_outlives_its_retries_is_dead_lettered_and_the_partition_moves_on(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    async def always_fails_for_the_first(event: Event) -> None:
        if event.sequence == 1:
            raise TransientError("still down")

    running.append(await start_probe(settings, before_effect=always_fails_for_the_first))
    await stage_events(pool, [refund_requested("pay_stuck", 1), refund_requested("pay_stuck", 2)])

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects WHERE sequence = 2", 1))
    [dead] = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(requested_topic(settings)), expected=1)
    assert headers_of(dead)["dlq_reason"] == "retries_exhausted"
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1, "the failed event's inbox row rolled back"


async def test_a_handlers_validation_error_is_logged_without_the_input_it_refused(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    async def validates_a_customers_input(event: Event) -> None:
        typed = "ada@example.com"
        TypeAdapter(int).validate_python(typed)  # pydantic quotes the input in its message

    running.append(await start_probe(settings, before_effect=validates_a_customers_input))
    with capture_logs(processors=[structlog.processors.format_exc_info]) as logs:  # tracebacks as the log writes them
        await stage_events(pool, [refund_requested("pay_invalid")])
        [dead] = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(requested_topic(settings)), expected=1)

    assert headers_of(dead)["dlq_reason"] == "handler_error"
    [logged] = [line for line in logs if line["event"] == "event_dead_lettered"]
    assert logged["error"] == "ValidationError: (the payload): int_parsing", "where and why, not what"
    assert "ada@example.com" not in repr(logs), "a customer's input reached the log"


async def test_a_handlers_database_error_is_dead_lettered_and_logged_without_the_row_it_refused(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    async def inserts_a_row_the_database_refuses(event: Event) -> None:
        customer = "ada@example.com"
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute("CREATE TEMP TABLE refused (email text CONSTRAINT no_email CHECK (email = ''))")
            await conn.execute("INSERT INTO refused VALUES ($1)", customer)  # DETAIL: Failing row contains (...)
        finally:
            await conn.close()

    running.append(await start_probe(settings, before_effect=inserts_a_row_the_database_refuses))
    with capture_logs(processors=[render_exceptions]) as logs:  # tracebacks as the log writes them
        await stage_events(pool, [refund_requested("pay_refused_row")])
        [dead] = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(requested_topic(settings)), expected=1)

    error = 'CheckViolationError: new row for relation "refused" violates check constraint "no_email"'
    assert headers_of(dead)["dlq_error"] == f"{error} (SQLSTATE 23514, constraint no_email)"
    [logged] = [line for line in logs if line["event"] == "event_dead_lettered"]
    assert "inserts_a_row_the_database_refuses" in logged["exception"], "the traceback's frames are kept"
    assert "ada@example.com" not in repr(logs) + repr(headers_of(dead)), "the refused row reached the log"


async def test_the_offset_is_committed_only_after_the_handler_transaction(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    [event] = await stage_events(pool, [refund_requested("pay_offset")])
    # Publish it, then let a consumer die between its handler and the commit.
    await OutboxRelay(
        pool, _broker := await _connected_broker(settings), schema=PROBE, topic_prefix=settings.topic_prefix
    ).relay_batch()
    await _broker.stop()

    assert run_probe_process("consume", settings, crash_at="probe.before_commit") == -9
    assert await effects(pool) == []

    running.append(await start_probe(settings))  # same consumer group: it must get the event again
    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 1))
    assert [r["event_id"] for r in await effects(pool)] == [event.id]


async def test_no_offset_is_committed_while_the_handler_transaction_is_open(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    handler_entered, release = asyncio.Event(), asyncio.Event()

    async def hold(event: Event) -> None:
        handler_entered.set()
        await release.wait()

    running.append(await start_probe(settings, before_effect=hold))
    await stage_events(pool, [refund_requested("pay_hold")])
    await asyncio.wait_for(handler_entered.wait(), timeout=60)
    await asyncio.sleep(6)  # longer than Kafka clients' 5 s auto-commit interval: an auto-commit would show

    assert await _committed_offsets(settings) == {}, "an offset was committed before the effect"
    release.set()
    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 1))
    await eventually(lambda: _has_committed(settings))


async def test_a_batch_commits_the_offsets_of_its_own_partitions_only(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    """aiokafka's ``commit()`` sends every assigned partition, each batch; a batch sends the partitions it read."""
    running.append(await start_probe(settings))
    await stage_events(pool, [refund_requested("pay_own_partition")])
    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 1))
    await eventually(lambda: _has_committed(settings))

    assert list((await _committed_offsets(settings)).values()) == [1], "only the event's partition, past the event"


async def _committed_offsets(settings: ServiceSettings) -> dict[int, int]:
    """The probe group's committed offsets on refund.requested, asked as a group member would."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.topic_prefix}{PROBE}",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        topic = requested_topic(settings)
        await reader.topics()
        committed = {
            p: await reader.committed(TopicPartition(topic, p)) for p in reader.partitions_for_topic(topic) or ()
        }
    finally:
        await reader.stop()
    return {p: offset for p, offset in committed.items() if offset is not None}


async def _has_committed(settings: ServiceSettings) -> bool:
    return sum((await _committed_offsets(settings)).values()) == 1


async def _connected_broker(settings: ServiceSettings) -> KafkaBroker:
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)
    await broker.connect()
    return broker


async def test_one_payments_events_are_handled_in_order_across_partitions_and_two_instances(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    running.append(await start_probe(settings, instance="a"))
    running.append(await start_probe(settings, instance="b"))
    # Both in the group before any event: else a handles them all while b is still joining (a loaded machine).
    await eventually(lambda: _joined([r.consumer for r in running], settings.topic_partitions), timeout=90)
    payments = [f"pay_order_{i}" for i in range(12)]
    # Interleave the payments' events, as concurrent traffic would.
    await stage_events(pool, [refund_requested(p, n) for n in range(1, 9) for p in payments])

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", len(payments) * 8), timeout=90)
    rows = await effects(pool)
    for payment in payments:
        handled = [r["sequence"] for r in rows if r["payment_id"] == payment]
        assert handled == list(range(1, 9)), f"{payment} handled out of order: {handled}"
        assert len({r["instance"] for r in rows if r["payment_id"] == payment}) == 1, f"{payment} handled by both"
    assert {r["instance"] for r in rows} == {"a", "b"}, "both instances took a share of the partitions"


async def _joined(consumers: list[EventConsumer], partitions: int) -> bool:
    """Every instance holds its share and together they hold every partition of every topic (one rebalance done)."""
    held = [consumer.kafka_consumer.assignment() if consumer.kafka_consumer else set() for consumer in consumers]
    return all(held) and sum(len(mine) for mine in held) == partitions * len(consumers[0].topics)


async def test_four_instances_each_hold_the_same_partition_numbers_of_every_topic(
    settings: ServiceSettings, pool: asyncpg.Pool
) -> None:
    # A payment's events land at one partition number on every topic; one lane per partition number keeps them
    # apart only if that number of every topic is held by one instance (round robin splits them from 4 instances).
    consumed = (RefundRequested, RefundApproved, RefundSucceeded, PaymentSucceeded)
    contract = ServiceContract(PROBE, consumes={data.event_type: "held" for data in consumed}, publishes={})
    await ensure_service_topics(settings)
    brokers, consumers = [], []
    for _ in range(4):
        broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)
        consumer = EventConsumer(PROBE, broker, pool, settings, contract)
        for data_type in consumed:
            consumer.handles(data_type)(_no_effect)
        consumer.subscribe()
        brokers.append(broker)
        consumers.append(consumer)
    try:
        await asyncio.gather(*(broker.start() for broker in brokers))
        await eventually(lambda: _joined(consumers, settings.topic_partitions), timeout=90)
        for consumer in consumers:
            assert consumer.kafka_consumer is not None
            numbers: dict[str, set[int]] = {}
            for tp in consumer.kafka_consumer.assignment():
                numbers.setdefault(tp.topic, set()).add(tp.partition)
            assert len(numbers) == len(consumed), f"an instance holds no partition of a topic: {numbers}"
            assert len({frozenset(held) for held in numbers.values()}) == 1, f"partition numbers split: {numbers}"
    finally:
        await asyncio.gather(*(broker.stop() for broker in brokers))


async def _no_effect(conn: asyncpg.Connection, event: Event, data: object) -> None:
    raise AssertionError("nothing is published to these topics in this test")


async def _published(settings: ServiceSettings, pool: asyncpg.Pool, payment_id: str, count: int) -> list[Event]:
    """``count`` events of one payment on the topic (one partition) before any consumer runs: one poll reads them."""
    staged = await stage_events(pool, [refund_requested(payment_id, n) for n in range(1, count + 1)])
    broker = await _connected_broker(settings)
    try:
        await OutboxRelay(pool, broker, schema=PROBE, topic_prefix=settings.topic_prefix).relay_batch()
    finally:
        await broker.stop()
    return staged


async def test_a_finish_writes_what_a_batchs_handlers_left_once_in_order(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    staged = await _published(settings, pool, "pay_finish", 6)
    finished: list[list[Event]] = []
    running.append(await start_probe(settings, finished=finished))

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 6))
    assert [r["event_id"] for r in await effects(pool)] == [event.id for event in staged]
    assert [event.id for events in finished for event in events] == [event.id for event in staged]
    assert len(finished) < len(staged), "each event finished on its own: nothing was written together"


async def test_a_prepare_runs_once_per_transaction_before_its_events_handlers_and_again_for_a_retry(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    staged = await _published(settings, pool, "pay_prepare", 5)

    async def refuse_the_third(event: Event) -> None:
        if event.sequence == 3:
            raise ValueError("the third event cannot be handled")

    prepared: list[list[Event]] = []
    running.append(await start_probe(settings, prepared=prepared, before_effect=refuse_the_third))

    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 4))
    assert [r["sequence"] for r in await effects(pool)] == [1, 2, 4, 5]
    sequences = [[event.sequence for event in events] for events in prepared]
    # All together; rolled back at the third: the first two again together, then the third first of the rest
    # (it fails there again, and is dead-lettered: not worth a retry), then the rest together.
    assert sequences == [[1, 2, 3, 4, 5], [1, 2], [3, 4, 5], [4, 5]]
    assert [event.id for event in prepared[0]] == [event.id for event in staged]


async def test_a_finish_that_fails_hands_each_event_alone_and_only_the_bad_one_is_dead_lettered(
    settings: ServiceSettings, pool: asyncpg.Pool, running: list[ServiceRuntime]
) -> None:
    staged = await _published(settings, pool, "pay_bad_finish", 3)

    async def refuse_the_second(events: list[Event]) -> None:
        if any(event.sequence == 2 for event in events):
            raise ValueError("the second event's effect cannot be written")

    finished: list[list[Event]] = []
    running.append(await start_probe(settings, finished=finished, before_finish=refuse_the_second))

    [dead] = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(requested_topic(settings)), expected=1)
    assert headers_of(dead)["ce_id"] == str(staged[1].id)
    assert headers_of(dead)["dlq_reason"] == "handler_error"
    await eventually(lambda: _count(pool, "SELECT count(*) FROM effects", 2))
    assert [r["event_id"] for r in await effects(pool)] == [staged[0].id, staged[2].id]
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 2, "the failed event's inbox row rolled back"
