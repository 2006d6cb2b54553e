"""The processor's and the notifier's HTTP routes, like intake's, run a request again whose transaction met another's
on the real PostgreSQL (a serialization failure), and answer 503 ``database_busy`` with a Retry-After when it keeps
failing (a lock wait that timed out, each try): a 500 before. Each service runs on a database of its own whose
sessions run at REPEATABLE READ (where a row changed since the transaction's snapshot cannot be locked) with a short
``lock_timeout``; another session of the test holds the row the route needs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from refundflow_notifier import webhook_store
from refundflow_notifier.app import create_app as create_notifier
from refundflow_sandbox.webhooks import stripe_signature
from refundflow_shared.events import Event
from tests.conftest import create_database
from tests.support.notifier_harness import TEST_INTERNAL_TOKEN, notifier_settings, succeeded
from tests.support.probe_service import eventually
from tests.support.processor_harness import WEBHOOK_SECRET, ProcessorUnderTest, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOCK_TIMEOUT = "1s"


async def contended_database(postgres_url: str) -> str:
    """A new database whose sessions (the service's, opened after this) see one snapshot per transaction and wait
    at most ``LOCK_TIMEOUT`` for a row."""
    database_url = await create_database(postgres_url)
    conn = await asyncpg.connect(database_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'")
        await conn.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '{LOCK_TIMEOUT}'")
    finally:
        await conn.close()
    return database_url


@asynccontextmanager
async def other_session(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session's transaction (as a batch's would be), read committed, never waiting itself; rolled back at
    the end unless the test commits it."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute("SET default_transaction_isolation = 'read committed'; SET lock_timeout = 0")
        await conn.execute("BEGIN")
        yield conn
    finally:
        await conn.execute("ROLLBACK")
        await conn.close()


async def waits_for_a_lock(other: asyncpg.Connection) -> None:
    """The service's session is waiting for the row the other session holds."""

    async def waiting() -> bool:
        return bool(
            await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        )

    await eventually(waiting, timeout=10, interval=0.01)


def busy_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] in ("database_busy", "database_contention_retried")]


def assert_database_busy(answer: httpx.Response, logs: list[MutableMapping[str, Any]], route: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json() == {
        "error": {
            "code": "database_busy",
            "message": "busy with other changes to the same records: please try again in a moment",
        }
    }
    assert answer.headers["retry-after"] == "1"
    [line] = busy_lines(logs)
    assert (line["event"], line["attempts"], line["sqlstate"], line["route"]) == ("database_busy", 3, "55P03", route)
    assert not [line for line in logs if line["event"] == "unhandled_error"]


# The processor: Stripe's webhook about a refund made at the provider (an external refund the processor knows).

PROVIDER_WEBHOOK = "/v1/provider-webhooks/stripe"


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    database_url = await contended_database(postgres_url)
    async with running_processor(database_url, kafka_bootstrap, f"t{uuid.uuid4().hex[:8]}.", webhooks=False) as running:
        yield running


async def external_refund(processor: ProcessorUnderTest) -> str:
    """A refund made at the provider, pending, of a payment the processor knows (and its sync job leaves alone: a
    scan changing the payment's row would fail the webhook's transaction (40001) where the test means it to wait)."""
    payment_id, provider_refund_id = f"pay_{uuid.uuid4().hex[:12]}", f"re_{uuid.uuid4().hex[:12]}"
    await processor.db.execute(
        "INSERT INTO payments (payment_id, merchant_id, provider_payment_id, amount, currency, trusted, next_sync_at)"
        " VALUES ($1, 'mer_test', $2, 10000, 'EUR', true, NULL)",
        payment_id,
        f"pi_{uuid.uuid4().hex[:12]}",
    )
    await processor.db.execute(
        "INSERT INTO external_refunds (provider_refund_id, payment_id, amount, currency, status)"
        " VALUES ($1, $2, 500, 'EUR', 'pending')",
        provider_refund_id,
        payment_id,
    )
    return provider_refund_id


async def stripe_webhook(processor: ProcessorUnderTest, provider_refund_id: str) -> httpx.Response:
    refund = {"id": provider_refund_id, "object": "refund", "status": "succeeded", "amount": 500, "currency": "eur"}
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "refund.updated", "data": {"object": refund}}
    payload = json.dumps(event).encode()
    signature = stripe_signature(payload, WEBHOOK_SECRET, int(time.time()))
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{processor.url}{PROVIDER_WEBHOOK}",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature},
        )


async def test_a_processor_webhook_whose_transaction_met_a_serialization_failure_is_run_again(
    processor: ProcessorUnderTest,
) -> None:
    """The webhook's transaction waits for the external refund's row, which the other session changes and commits:
    PostgreSQL cannot lock a row changed since the transaction's snapshot (40001). It was a 500."""
    provider_refund_id = await external_refund(processor)
    async with other_session(processor.settings.database_url, "processor") as other:
        changed = "UPDATE external_refunds SET detected_at = now() WHERE provider_refund_id = $1"
        await other.execute(changed, provider_refund_id)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            webhook = asyncio.create_task(stripe_webhook(processor, provider_refund_id))
            await waits_for_a_lock(other)
            await other.execute("COMMIT; BEGIN")
            answer = await webhook

    assert answer.status_code == 200, answer.text
    [line] = busy_lines(logs)
    assert (line["event"], line["attempts"], line["sqlstate"]) == ("database_contention_retried", 2, "40001")
    assert line["route"] == PROVIDER_WEBHOOK


async def test_a_processor_webhook_kept_waiting_for_a_row_on_every_try_is_answered_503_database_busy(
    processor: ProcessorUnderTest,
) -> None:
    provider_refund_id = await external_refund(processor)
    async with other_session(processor.settings.database_url, "processor") as other:
        held = "SELECT 1 FROM external_refunds WHERE provider_refund_id = $1 FOR UPDATE"
        await other.execute(held, provider_refund_id)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            answer = await stripe_webhook(processor, provider_refund_id)

    assert_database_busy(answer, logs, PROVIDER_WEBHOOK)


# The notifier: intake asks its internal API for a replay of an endpoint's events since a time.

REPLAYS = "/internal/v1/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/replays"


@pytest.fixture(scope="module")
async def notifier(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The notifier's app, and its database's URL."""
    settings = notifier_settings(await contended_database(postgres_url), kafka_bootstrap, 1025)
    app = create_notifier(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier", headers=headers) as client:
            yield client, settings.database_url


async def endpoint_with_a_sent_event(database_url: str) -> tuple[str, str]:
    """An enabled endpoint (its merchant's id and its id) to which one event was delivered."""
    merchant_id, endpoint_id = f"mer_{uuid.uuid4().hex[:10]}", f"we_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "notifier"})
    try:
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
            " VALUES ($1, $2, 'https://hooks.example/refunds', '{refund.succeeded}', true, 'sealed', 1)",
            endpoint_id,
            merchant_id,
        )
        event = Event.wrap(succeeded(merchant_id), source="refundflow/test", sequence=1)
        await webhook_store.queue_events(conn, [(event, None)], max_endpoints=5)
        await conn.execute("UPDATE webhook_deliveries SET status = 'succeeded', finished_at = now()")
    finally:
        await conn.close()
    return merchant_id, endpoint_id


async def test_a_notifier_replay_whose_transaction_met_a_serialization_failure_is_run_again(
    notifier: tuple[httpx.AsyncClient, str],
) -> None:
    """The replay's insert waits for the other session's replay of the same period, which then commits: a row the
    transaction's snapshot cannot see conflicts with its insert (40001). It was a 500 to intake."""
    client, database_url = notifier
    merchant_id, endpoint_id = await endpoint_with_a_sent_event(database_url)
    since = datetime.now(UTC) - timedelta(hours=1)
    async with other_session(database_url, "notifier") as other:
        await other.execute(
            "INSERT INTO webhook_replays (endpoint_id, since, reach) VALUES ($1, $2, interval '30 days')",
            endpoint_id,
            since,
        )
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            path = REPLAYS.format(merchant_id=merchant_id, endpoint_id=endpoint_id)
            replay = asyncio.create_task(client.post(path, json={"since": since.isoformat()}))
            await waits_for_a_lock(other)
            await other.execute("COMMIT; BEGIN")
            answer = await replay

    assert answer.status_code == 202, answer.text
    # The other session's replay joined, or a new one if the replay job walked that one to its end meanwhile.
    assert answer.json()["replay"] in ("already_running", "started"), answer.json()
    [line] = busy_lines(logs)
    assert (line["event"], line["attempts"], line["sqlstate"]) == ("database_contention_retried", 2, "40001")
    assert line["route"] == REPLAYS


async def test_a_notifier_replay_kept_waiting_for_a_row_on_every_try_is_answered_503_database_busy(
    notifier: tuple[httpx.AsyncClient, str],
) -> None:
    client, database_url = notifier
    merchant_id, endpoint_id = await endpoint_with_a_sent_event(database_url)
    async with other_session(database_url, "notifier") as other:
        await other.execute("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE", endpoint_id)
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            path = REPLAYS.format(merchant_id=merchant_id, endpoint_id=endpoint_id)
            since = datetime.now(UTC) - timedelta(hours=1)
            answer = await client.post(path, json={"since": since.isoformat()})

    assert_database_busy(answer, logs, REPLAYS)
