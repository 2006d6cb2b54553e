"""Database faults are waited out, never dead-lettered; a real bug still is, and a refund it leaves unfinished
raises a team alert (review finding 8).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from refundflow_shared.consumer import TransientError
from refundflow_shared.events import Event, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.transient_faults import database_is_contended, database_is_unavailable
from tests.conftest import create_database
from tests.support.kafka_reader import headers_of, read_topic
from tests.support.probe_service import (
    FailHook,
    eventually,
    probe_settings,
    refund_requested,
    stage_events,
    start_probe,
)
from tests.support.raw_records import RawRecord, produce, raw_headers


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.AdminShutdownError(),  # 57P01: restart, failover, pg_terminate_backend
        asyncpg.CrashShutdownError(),  # 57P02
        asyncpg.CannotConnectNowError(),  # 57P03
        asyncpg.QueryCanceledError(),  # 57014
        asyncpg.TooManyConnectionsError(),  # 53300
        asyncpg.OutOfMemoryError(),  # 53200
        asyncpg.ConnectionDoesNotExistError(),  # 08003
        asyncpg.SerializationError(),  # 40001
        asyncpg.DeadlockDetectedError(),  # 40P01
        asyncpg.ReadOnlySQLTransactionError(),  # 25006: a demoted primary
        asyncpg.LockNotAvailableError(),  # 55P03
        ConnectionResetError(),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_the_database_being_away_or_overloaded_is_waited_out(error: Exception) -> None:
    assert database_is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError(),
        asyncpg.UndefinedColumnError(),
        asyncpg.DataError(),
        asyncpg.CheckViolationError(),
        ValueError("a bug"),
        KeyError("refund"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_bug_is_not_mistaken_for_an_unavailable_database(error: Exception) -> None:
    assert not database_is_unavailable(error)


@pytest.mark.parametrize(
    ("error", "contended"),
    [
        (asyncpg.SerializationError(), True),  # 40001
        (asyncpg.DeadlockDetectedError(), True),  # 40P01
        (asyncpg.LockNotAvailableError(), True),  # 55P03
        # A connection that failed may have carried a COMMIT that was kept: unavailable, not contention.
        (asyncpg.ConnectionDoesNotExistError(), False),
        (asyncpg.AdminShutdownError(), False),
        (asyncpg.QueryCanceledError(), False),
        (asyncpg.InterfaceError("connection is closed"), False),
        (asyncpg.UniqueViolationError(), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_contention_is_the_part_of_the_unavailable_database_that_was_undone_whole(
    error: Exception, contended: bool
) -> None:
    """What an HTTP request of intake's runs again for: what the consumers wait out, less a connection that failed."""
    assert database_is_contended(error) is contended
    assert database_is_unavailable(error) or not contended


@dataclass
class Probe:
    """One probe service for the module; each test sets what its handler does first, and uses its own payments."""

    settings: ServiceSettings
    runtime: ServiceRuntime
    admin: asyncpg.Connection
    before_effect: FailHook | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    @property
    def topic(self) -> str:
        return topic_for("refund.requested", self.settings.topic_prefix)

    async def effects(self, payment_prefix: str) -> list[asyncpg.Record]:
        sql = "SELECT event_id, payment_id, sequence FROM effects WHERE payment_id LIKE $1 ORDER BY id"
        return list(await self.pool.fetch(sql, f"{payment_prefix}%"))

    async def dead_letters(self, payment_prefix: str) -> list[dict[str, str]]:
        records = await read_topic(self.settings.kafka_bootstrap_servers, dlq_topic(self.topic), expected=0)
        return [headers_of(r) for r in records if (r.key or b"").decode().startswith(payment_prefix)]


@pytest.fixture(scope="module")
async def probe(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Probe]:
    settings = probe_settings(
        await create_database(postgres_url),
        kafka_bootstrap,
        f"t{uuid.uuid4().hex[:10]}.",
        consumer_retry_attempts=2,
        consumer_retry_max_seconds=0.2,
    )
    admin = await asyncpg.connect(settings.database_url, server_settings={"application_name": "test-admin"})
    holder: list[Probe] = []

    async def before_effect(event: Event) -> None:
        if holder[0].before_effect is not None:
            await holder[0].before_effect(event)

    runtime = await start_probe(settings, before_effect=before_effect, effect_seconds=0.02)
    holder.append(Probe(settings, runtime, admin))
    try:
        yield holder[0]
    finally:
        await runtime.stop()
        await admin.close()


@pytest.fixture
def fresh(probe: Probe) -> Probe:
    probe.before_effect = None
    return probe


async def test_connections_terminated_mid_burst_leave_every_event_handled_exactly_once(fresh: Probe) -> None:
    payments = [f"pay_kill_{i}" for i in range(10)]
    staged = await stage_events(fresh.pool, [refund_requested(p, n) for n in range(1, 16) for p in payments])
    terminated = 0

    async def all_handled() -> bool:
        nonlocal terminated
        # Kill the service's connections (its relay, its listener and its consumer) while the burst runs.
        terminated += await fresh.admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'refundflow-probe' AND datname = current_database()"
        )
        await asyncio.sleep(0.15)
        count = await fresh.admin.fetchval("SELECT count(*) FROM probe.effects WHERE payment_id LIKE 'pay_kill_%'")
        return bool(count >= len(staged))

    await eventually(all_handled, timeout=120, interval=0)
    await asyncio.sleep(1)  # time for a duplicate effect to show

    rows = await fresh.effects("pay_kill_")
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in staged), "each event once, none lost"
    for payment in payments:
        assert [r["sequence"] for r in rows if r["payment_id"] == payment] == list(range(1, 16)), "in order"
    assert terminated > 10, "the connections were killed while the burst was handled"
    assert await fresh.dead_letters("pay_kill_") == []


async def test_a_handler_refused_by_an_overloaded_or_restarting_database_waits_and_handles_once(
    fresh: Probe,
) -> None:
    refusals = [asyncpg.TooManyConnectionsError(), asyncpg.AdminShutdownError(), asyncpg.QueryCanceledError()] * 2
    calls: list[uuid.UUID] = []

    async def overloaded(event: Event) -> None:
        calls.append(event.id)
        if len(calls) <= len(refusals):
            raise refusals[len(calls) - 1]

    fresh.before_effect = overloaded
    [event] = await stage_events(fresh.pool, [refund_requested("pay_overloaded")])
    await eventually(lambda: _has_effects(fresh, "pay_overloaded", 1))

    assert calls == [event.id] * (len(refusals) + 1), "waited well past the 2 retries of a transient error"
    assert await fresh.dead_letters("pay_overloaded") == []


async def test_waiting_out_the_database_spends_none_of_a_transient_errors_retries(fresh: Probe) -> None:
    """Two transient tries are allowed (the module's setting); the database's refusals in between are waits, not
    tries: the third call's transient error is the event's first, and it is retried, not dead-lettered."""
    failures: list[Exception] = [asyncpg.DeadlockDetectedError(), asyncpg.AdminShutdownError(), TransientError()]
    calls = 0

    async def flaky(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls <= len(failures):
            raise failures[calls - 1]

    fresh.before_effect = flaky
    await stage_events(fresh.pool, [refund_requested("pay_waited")])
    await eventually(lambda: _has_effects(fresh, "pay_waited", 1))

    assert calls == len(failures) + 1
    assert await fresh.dead_letters("pay_waited") == []


async def test_a_handlers_own_timeout_is_the_events_retried_a_few_times_then_dead_lettered(fresh: Probe) -> None:
    """TimeoutError is an OSError, which says the database is away: a handler's own deadline (a dependency that does
    not answer) was waited for as the database, retried for ever and never dead-lettered, holding up its partition.
    (Here it would pass on the tenth try: waited for, it is handled, with no dead letter.)"""
    calls = 0

    async def times_out(event: Event) -> None:
        nonlocal calls
        if getattr(event.data, "payment_id", None) == "pay_timeout" and event.sequence == 1:
            calls += 1
            if calls < 10:
                raise TimeoutError("the dependency did not answer in time")

    fresh.before_effect = times_out
    failing, _ = await stage_events(
        fresh.pool, [refund_requested("pay_timeout", 1), refund_requested("pay_timeout", 2)]
    )
    await eventually(lambda: _has_effects(fresh, "pay_timeout", 1))
    await asyncio.sleep(0.5)  # time for a late effect to show

    assert [r["sequence"] for r in await fresh.effects("pay_timeout")] == [2]
    [dead] = await fresh.dead_letters("pay_timeout")
    assert (dead["dlq_reason"], dead["ce_id"]) == ("retries_exhausted", str(failing.id))
    assert "TimeoutError" in dead["dlq_error"]
    assert calls == fresh.settings.consumer_retry_attempts, "the event's own retries, no more"


async def _has_effects(probe: Probe, payment_prefix: str, expected: int) -> bool:
    return len(await probe.effects(payment_prefix)) == expected


async def test_a_bug_dead_letters_the_event_and_alerts_the_team_about_the_unfinished_refund(fresh: Probe) -> None:
    async def buggy(event: Event) -> None:
        if getattr(event.data, "payment_id", None) == "pay_bug" and event.sequence == 1:
            raise ValueError("no rule for ada@example.com")

    fresh.before_effect = buggy
    failing, _ = await stage_events(fresh.pool, [refund_requested("pay_bug", 1), refund_requested("pay_bug", 2)])
    await eventually(lambda: _has_effects(fresh, "pay_bug", 1))
    [dead] = await fresh.dead_letters("pay_bug")
    assert dead["dlq_reason"] == "handler_error", "a bug is not waited for"
    assert dead["ce_id"] == str(failing.id)

    [alert] = await fresh.pool.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'team_alert.raised' AND partition_key = 'pay_bug'"
    )
    payload = json.loads(bytes(alert["payload"]))
    assert payload["kind"] == "event_dead_lettered"
    assert payload["refund_id"] == "ref_pay_bug_1"
    assert payload["merchant_id"] == "mer_probe"
    assert payload["details"]["topic"] == fresh.topic
    assert payload["details"]["reason"] == "handler_error"
    assert "ada@example.com" not in json.dumps(payload), "no customer data in the alert"


async def test_an_undecodable_record_alerts_nobody_since_no_merchant_is_known(fresh: Probe) -> None:
    alerts = "SELECT count(*) FROM outbox WHERE event_type = 'team_alert.raised'"
    before = await fresh.pool.fetchval(alerts)
    good = Event.wrap(refund_requested("pay_garbage"), source="refundflow/test", sequence=1)
    await produce(
        fresh.settings.kafka_bootstrap_servers,
        [
            RawRecord(fresh.topic, b"pay_garbage", [], b'{"refund_id": "ref_1"}'),
            RawRecord(fresh.topic, b"pay_garbage", raw_headers(good), good.kafka_value()),
        ],
    )
    await eventually(lambda: _has_effects(fresh, "pay_garbage", 1))
    [dead] = await fresh.dead_letters("pay_garbage")
    assert dead["dlq_reason"] == "missing_attributes"
    assert await fresh.pool.fetchval(alerts) == before


async def test_a_bug_in_the_middle_of_a_batch_parks_only_that_event_and_the_rest_are_handled_once_in_order(
    fresh: Probe,
) -> None:
    async def buggy(event: Event) -> None:
        if getattr(event.data, "payment_id", None) == "pay_batch" and event.sequence == 4:
            raise ValueError("a bug")

    fresh.before_effect = buggy
    # Staged in one go and relayed together, so the consumer reads them as one batch (or a few).
    staged = await stage_events(fresh.pool, [refund_requested("pay_batch", n) for n in range(1, 9)])
    await eventually(lambda: _has_effects(fresh, "pay_batch", 7))
    await asyncio.sleep(0.5)  # time for a duplicate effect to show

    rows = await fresh.effects("pay_batch")
    assert [r["sequence"] for r in rows] == [1, 2, 3, 5, 6, 7, 8], "each once, in order, without the bad one"
    [dead] = await fresh.dead_letters("pay_batch")
    assert dead["dlq_reason"] == "handler_error" and dead["ce_id"] == str(staged[3].id)


async def test_the_same_event_twice_in_one_batch_is_handled_once(fresh: Probe) -> None:
    event = Event.wrap(refund_requested("pay_twice"), source="refundflow/test", sequence=1)
    copy = RawRecord(fresh.topic, b"pay_twice", raw_headers(event), event.kafka_value())
    await produce(fresh.settings.kafka_bootstrap_servers, [copy, copy])
    await eventually(lambda: _has_effects(fresh, "pay_twice", 1))
    await asyncio.sleep(0.5)  # time for a duplicate effect to show

    assert len(await fresh.effects("pay_twice")) == 1
    assert await fresh.dead_letters("pay_twice") == []
