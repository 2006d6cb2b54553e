"""No event can stop the outbox relay (review finding 2, story 2; and 25.12).

An event over the broker's limit is refused when it is written. A row the broker refuses anyway (staged before the
limit existed, or by hand) is retried, then parked with its error and a team alert, while the rows behind it, of
its own key and of others, are delivered in order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka.errors import MessageSizeTooLargeError

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.database import create_pool
from refundflow_shared.event_decoding import DEFAULT_MAX_EVENT_BYTES
from refundflow_shared.events import Event, topic_for
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.outbox import EventTooLarge, add_event, limit_event_size, retry_parked
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.wakeup_loop import run_on_notify
from tests.conftest import create_database
from tests.support.kafka_reader import headers_of, read_topic
from tests.support.probe_service import (
    PROBE,
    PROBE_MIGRATIONS,
    eventually,
    probe_settings,
    refund_requested,
    stage_events,
    start_probe,
)

ADMIN = {"Authorization": "Bearer outbox-admin-token"}


@pytest.fixture
def small_events() -> Iterator[int]:
    """A 1 KiB event limit for this test only (the limit is per process)."""
    limit_event_size(1024)
    yield 1024
    limit_event_size(DEFAULT_MAX_EVENT_BYTES)


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The probe's tables, no service running."""
    database_url = await create_database(postgres_url)
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    pool = await create_pool(database_url, PROBE)
    yield pool
    await pool.close()


async def test_an_event_over_the_limit_is_refused_when_written_and_takes_no_sequence_number(
    pool: asyncpg.Pool, small_events: int
) -> None:
    oversized = refund_requested("pay_big").model_copy(update={"customer_email": "a" * 900 + "@example.com"})
    with pytest.raises(EventTooLarge) as refused:
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, refund_requested("pay_big", 1), source="refundflow/probe")
            await add_event(conn, oversized, source="refundflow/probe")
    assert refused.value.code == "event_too_large"

    [event] = await stage_events(pool, [refund_requested("pay_big", 2)])
    assert event.sequence == 1, "the refused transaction left no gap in the payment's sequence"
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_intake_answers_422_event_too_large_and_writes_nothing(postgres_url: str, kafka_bootstrap: str) -> None:
    settings = IntakeSettings(
        database_url=await create_database(postgres_url),
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        refundflow_admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
        event_max_bytes=1024,
    )
    app = create_intake(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as api,
        ):
            merchant = await api.post("/v1/merchants", json={"name": "Acme"}, headers=ADMIN)
            payment = {
                "merchant_id": merchant.json()["id"],
                "customer_email": "ada@example.com",
                "customer_name": "A" * 200,
                "amount": 1000,
                "currency": "EUR",
                "provider_payment_id": f"pi_{'x' * 200}",
                "paid_at": "2026-01-01T00:00:00Z",
                "product": {"id": "p" * 255, "name": "n" * 200, "kind": "one_time", "category": "c" * 100},
            }
            response = await api.post("/v1/payments", json=payment, headers=ADMIN)

            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "event_too_large"
            db = await asyncpg.connect(settings.database_url, server_settings={"search_path": "intake"})
            try:
                assert await db.fetchval("SELECT count(*) FROM payments") == 0
                assert await db.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'payment.succeeded'") == 0
            finally:
                await db.close()
    finally:
        limit_event_size(DEFAULT_MAX_EVENT_BYTES)


@dataclass
class Relayed:
    settings: ServiceSettings
    runtime: ServiceRuntime


@pytest.fixture
async def relaying(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Relayed]:
    settings = probe_settings(
        await create_database(postgres_url),
        kafka_bootstrap,
        f"t{uuid.uuid4().hex[:10]}.",
        outbox_park_after_attempts=3,
    )
    runtime = await start_probe(settings, consume=False)
    yield Relayed(settings, runtime)
    await runtime.stop()


async def stage_unpublishable_row(pool: asyncpg.Pool, payment_id: str) -> uuid.UUID:
    """A refund.requested of 1.1 MB, staged straight into the outbox as an old release (or a hand) could."""
    event = Event.wrap(refund_requested(payment_id, 2), source="refundflow/probe", sequence=2)
    payload = {**json.loads(event.kafka_value()), "padding": "x" * 1_100_000}
    await pool.execute(
        "INSERT INTO outbox (event_id, event_type, partition_key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
        event.id,
        "refund.requested",
        payment_id,
        json.dumps(event.kafka_headers()),
        json.dumps(payload).encode(),
    )
    return event.id


async def test_a_row_the_broker_refuses_is_parked_with_an_alert_and_every_row_behind_it_is_delivered(
    relaying: Relayed,
) -> None:
    pool, settings = relaying.runtime.pool, relaying.settings
    [first] = await stage_events(pool, [refund_requested("pay_a", 1)])
    refused = await stage_unpublishable_row(pool, "pay_a")
    behind = await stage_events(pool, [refund_requested("pay_a", 3), refund_requested("pay_b", 1)])

    async def parked() -> bool:
        return bool(await pool.fetchval("SELECT parked_at IS NOT NULL FROM outbox WHERE event_id = $1", refused))

    await eventually(parked)
    records = await read_topic(
        settings.kafka_bootstrap_servers, topic_for("refund.requested", settings.topic_prefix), expected=3
    )
    delivered = [headers_of(r)["ce_id"] for r in records]
    assert sorted(delivered) == sorted(str(e.id) for e in [first, *behind]), "every other row, once"
    pay_a = [headers_of(r)["ce_id"] for r in records if r.key == b"pay_a"]
    assert pay_a == [str(first.id), str(behind[0].id)], "its key's rows in order, the later one after the parking"

    row = await pool.fetchrow("SELECT attempts, last_error, sent_at FROM outbox WHERE event_id = $1", refused)
    assert row["attempts"] == 3
    assert row["last_error"].startswith(MessageSizeTooLargeError.__name__)
    assert row["sent_at"] is None

    [alert] = await pool.fetch("SELECT payload, sent_at FROM outbox WHERE event_type = 'team_alert.raised'")
    payload = json.loads(bytes(alert["payload"]))
    assert payload["kind"] == "event_parked"
    assert payload["merchant_id"] == "mer_probe"
    assert payload["payment_id"] == "pay_a"
    assert payload["details"]["event_id"] == str(refused)
    assert "MessageSizeTooLargeError" in payload["details"]["error"]
    await eventually(lambda: _all_sent_but(pool, refused))
    assert relaying.runtime.dead_jobs == [], "the relay is alive"

    # An operator puts it back in line (say, after raising the broker's limit): it is tried again, then parked.
    async with pool.acquire() as conn:
        assert await retry_parked(conn, [refused]) == 1
    await eventually(parked)
    assert await pool.fetchval("SELECT attempts FROM outbox WHERE event_id = $1", refused) == 3


async def _all_sent_but(pool: asyncpg.Pool, parked: uuid.UUID) -> bool:
    unsent = await pool.fetch("SELECT event_id FROM outbox WHERE sent_at IS NULL")
    return [r["event_id"] for r in unsent] == [parked]


async def test_a_broker_refusal_that_reaches_a_background_loop_ends_the_job_instead_of_looping(
    pool: asyncpg.Pool,
) -> None:
    calls = 0

    async def refused() -> bool:
        nonlocal calls
        calls += 1
        raise MessageSizeTooLargeError("the message is 1100000 bytes")

    with pytest.raises(MessageSizeTooLargeError):
        await asyncio.wait_for(run_on_notify(pool, "probe_outbox", refused, poll_interval=0.01, name="test"), 10)
    assert calls == 1
