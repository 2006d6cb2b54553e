"""A database blip between the SMTP server's 250 (or a receiver's 2xx) and its record sends nothing again: the
record is retried while the lease holds. And a notifier's worker whose lease ran out (its call took longer, or its
record waited) records nothing that undoes what the claim after it did: it never turns a delivered webhook or a sent
email into a failed one, counts a healthy endpoint's failure, disables it, or frees the lease another instance holds.
Nor does a secret the notifier cannot open (sealed under a key missing from its ring): that failure is the
platform's, so the delivery waits for the key, and a rolled-from secret that does not open leaves the current to sign.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.message_worker import MessageWorker
from refundflow_notifier.outbound_http import outbound_client
from refundflow_notifier.records import Channel, ClaimedDelivery, ClaimedMessage, DeliveredAttempt
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import SmtpMailer
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.lease_dispatcher import LeaseDispatcher
from refundflow_shared.secret_box import SecretBox, generate_key
from refundflow_shared.structured_logging import _redact
from tests.support.notifier_harness import TEST_SECRET_KEY, notifier_database, notifier_settings
from tests.support.notifier_receivers import (
    DEFERRING_DOMAIN,
    CapturingSmtpHandler,
    HttpReceiver,
    http_receiver,
    smtp_server,
)
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
ANSWER_SECONDS = 0.5  # how long the receivers take to accept: time for the test to lock the row first
CAPS = {"per_endpoint": 8, "per_merchant": 16}


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[CapturingSmtpHandler, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[HttpReceiver]:
    async with http_receiver() as receiver:
        yield receiver


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    # Room for the worker's listener, claim and record besides the test's own connections.
    async with notifier_database(postgres_url, max_size=8) as pool:
        yield pool


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with outbound_client(allow_private=True, max_connections=8) as session:
        yield session


def settings(smtp_port: int, **overrides: Any) -> NotifierSettings:
    # Leases run out 2.5 s after a claim: a send left unrecorded goes again soon after.
    values = {"lease_margin_seconds": 0.5, "smtp_timeout_seconds": 2.0, "webhook_timeout_seconds": 2.0, **overrides}
    return notifier_settings("postgresql://unused/notifier", "unused:9092", smtp_port, **values)


async def queue_email(pool: asyncpg.Pool, recipient: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        message = message_queue.QueuedMessage(
            uuid.uuid4(), "mer_1", Channel.EMAIL, "refund_approved", recipient, b"Subject: Refund\r\n\r\nApproved."
        )
        await message_queue.queue(conn, [message])
    message_id: int = await pool.fetchval("SELECT id FROM messages WHERE recipient = $1", recipient)
    return message_id


async def queue_delivery(
    pool: asyncpg.Pool,
    url: str,
    *,
    secret: str | None = None,
    box: SecretBox | None = None,
    previous: tuple[str, SecretBox] | None = None,
    events: int = 1,
) -> str:
    """An enabled endpoint at ``url`` with ``events`` deliveries due; its secret (a new one unless given) sealed by
    ``box`` (the notifier's key unless given), and a rolled-from secret still signing when ``previous`` is given
    (the secret, sealed by its box). The endpoint's id."""
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    sealed = (box or SecretBox(TEST_SECRET_KEY)).seal(secret or new_signing_secret(), context=endpoint_id)
    sealed_previous = previous[1].seal(previous[0], context=endpoint_id) if previous else None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version,"
            " previous_encrypted_secret, previous_secret_expires_at)"
            " VALUES ($1, 'mer_1', $2, '{refund.approved}', true, $3, 1, $4, now() + interval '1 day')",
            endpoint_id,
            url,
            sealed,
            sealed_previous,
        )
        for _ in range(events):
            event_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
                " VALUES ($1, 'mer_1', 'refund.approved', now(), '{}')",
                event_id,
            )
            await conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id) VALUES ($1, 'mer_1', $2)",
                endpoint_id,
                event_id,
            )
    return endpoint_id


async def claim_message(pool: asyncpg.Pool, lease_seconds: float) -> ClaimedMessage:
    [message] = await message_queue.claim_due(pool, 10, [], lease_seconds=lease_seconds, per_merchant=8)
    return message


async def claim_delivery(pool: asyncpg.Pool, lease_seconds: float) -> ClaimedDelivery:
    [delivery] = await webhook_store.claim_due(pool, 10, [], lease_seconds=lease_seconds, **CAPS)
    return delivery


class SlowSmtpHandler(CapturingSmtpHandler):
    """Answers 250 to DATA only after ``ANSWER_SECONDS``."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(ANSWER_SECONDS)
        return await super().handle_DATA(server, session, envelope)


async def cut_the_record_off(pool: asyncpg.Pool, table: str, row_id: int) -> None:
    """Once the row is claimed, hold its lock until the worker's record waits for it, then kill the worker's
    connection there (as a failover or a restart would): the record fails after the receiver took the send."""

    async def claimed() -> bool:
        return bool(await pool.fetchval(f"SELECT locked_until IS NOT NULL FROM {table} WHERE id = $1", row_id))

    await eventually(claimed, timeout=10, interval=0.01)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(f"SELECT FROM {table} WHERE id = $1 FOR UPDATE", row_id)
        me = holder.get_server_pid()

        async def record_cut_off() -> bool:
            killed = await pool.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                me,
            )
            return bool(killed)

        await eventually(record_cut_off, timeout=10, interval=0.01)


async def until(pool: asyncpg.Pool, sql: str, row_id: int, expected: str) -> None:
    async def reached() -> bool:
        return bool(await pool.fetchval(sql, row_id) == expected)

    await eventually(reached, timeout=15)


async def running(dispatcher: LeaseDispatcher[Any, Any]) -> asyncio.Task[None]:
    return asyncio.create_task(dispatcher.run())


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_email_whose_record_the_database_cut_off_after_the_250_is_sent_once(pool: asyncpg.Pool) -> None:
    with smtp_server(handler=SlowSmtpHandler()) as (mail, port):
        mailer = SmtpMailer(settings(port))
        worker = MessageWorker(pool, settings(port), mailer, None, None)  # type: ignore[arg-type] # email only
        message_id = await queue_email(pool, "ada@example.com")
        task = await running(worker.dispatcher())
        try:
            await cut_the_record_off(pool, "messages", message_id)
            await until(pool, "SELECT status FROM messages WHERE id = $1", message_id, "sent")
            await asyncio.sleep(3.5)  # past the lease: a send left unrecorded would have gone again
        finally:
            await stopped(task)
            await mailer.close()
    assert len(mail.messages) == 1, "sent once, however the database hiccuped after the 250"
    attempts = await pool.fetchval("SELECT attempts FROM messages WHERE id = $1", message_id)
    assert attempts == 1


async def test_a_webhook_whose_record_the_database_cut_off_after_the_2xx_is_delivered_once(
    pool: asyncpg.Pool, http: HttpReceiver, client: aiohttp.ClientSession
) -> None:
    http.scripts["blip"] = [(ANSWER_SECONDS, 200)]
    await queue_delivery(pool, http.url("blip"))
    delivery_id: int = await pool.fetchval("SELECT id FROM webhook_deliveries")
    worker = WebhookWorker(pool, settings(1025), client, SecretBox(TEST_SECRET_KEY))
    task = await running(worker.dispatcher())
    try:
        await cut_the_record_off(pool, "webhook_deliveries", delivery_id)
        await until(pool, "SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id, "succeeded")
        await asyncio.sleep(3.5)  # past the lease: a delivery left unrecorded would have gone again
    finally:
        await stopped(task)
    assert len(http.received["blip"]) == 1, "delivered once, however the database hiccuped after the 2xx"
    attempts = await pool.fetch("SELECT attempt, status_code FROM webhook_attempts")
    assert [tuple(r) for r in attempts] == [(1, 200)]


async def test_a_stale_workers_failure_leaves_the_next_claims_delivery_and_its_endpoint_alone(
    pool: asyncpg.Pool, http: HttpReceiver, client: aiohttp.ClientSession
) -> None:
    http.scripts["stale"] = [500]
    endpoint_id = await queue_delivery(pool, http.url("stale"))
    # One failed event disables the endpoint, and this attempt is the last the schedule allows.
    worker = WebhookWorker(
        pool,
        settings(1025, webhook_retry_schedule_seconds=[0.0], webhook_disable_after_failed_events=1),
        client,
        SecretBox(TEST_SECRET_KEY),
    )
    stale = await claim_delivery(pool, lease_seconds=0)  # a worker whose lease ran out before its call ended
    current = await claim_delivery(pool, lease_seconds=60)  # another instance took the delivery over
    assert current.id == stale.id
    async with pool.acquire() as conn:
        await webhook_store.record_successes(conn, [DeliveredAttempt(current, datetime.now(UTC), 200, 5, None)])

    await worker.deliver(stale)  # answered 500, recorded late

    delivery = await pool.fetchrow("SELECT status, attempts FROM webhook_deliveries WHERE id = $1", stale.id)
    assert tuple(delivery) == ("succeeded", 2), "the delivery stays delivered"
    endpoint = await pool.fetchrow(
        "SELECT enabled, consecutive_failures FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    assert tuple(endpoint) == (True, 0), "a healthy endpoint is neither counted as failing nor disabled"
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0, "and nobody is alerted"
    attempts = await pool.fetch("SELECT attempt, status_code FROM webhook_attempts ORDER BY attempt")
    assert [tuple(r) for r in attempts] == [(1, 500), (2, 200)], "the stale attempt is in the log all the same"


async def test_a_stale_workers_retry_never_frees_the_lease_of_the_claim_after_it(
    pool: asyncpg.Pool, http: HttpReceiver, client: aiohttp.ClientSession
) -> None:
    await queue_delivery(pool, http.url("stale-retry"))
    worker = WebhookWorker(pool, settings(1025, webhook_retry_schedule_seconds=[0.0, 0.0]), client, None)
    stale = await claim_delivery(pool, lease_seconds=0)
    await claim_delivery(pool, lease_seconds=60)  # in flight elsewhere

    await worker.deliver(stale)  # cannot sign (no key): a failure, to be retried

    assert await webhook_store.claim_due(pool, 10, [], lease_seconds=60, **CAPS) == [], "still leased elsewhere"


async def test_a_stale_workers_deferred_email_never_frees_the_lease_of_the_claim_after_it(
    pool: asyncpg.Pool, mail: tuple[CapturingSmtpHandler, int]
) -> None:
    _, port = mail
    mailer = SmtpMailer(settings(port))
    worker = MessageWorker(pool, settings(port), mailer, None, None)  # type: ignore[arg-type] # email only
    message_id = await queue_email(pool, f"ada.{uuid.uuid4().hex[:6]}@{DEFERRING_DOMAIN}")
    stale = await claim_message(pool, lease_seconds=0)
    await claim_message(pool, lease_seconds=60)  # in flight elsewhere

    try:
        await worker.send(stale)  # 451: try again later
    finally:
        await mailer.close()

    row = await pool.fetchrow(
        "SELECT status, attempts, error, locked_until > now() + interval '30 seconds' AS leased FROM messages"
        " WHERE id = $1",
        message_id,
    )
    assert tuple(row) == ("pending", 2, None, True), "still leased to the claim after it, which goes on"


async def test_a_stale_workers_rejection_never_overwrites_the_email_another_claim_sent(
    pool: asyncpg.Pool, mail: tuple[CapturingSmtpHandler, int]
) -> None:
    _, port = mail
    mailer = SmtpMailer(settings(port))
    worker = MessageWorker(pool, settings(port), mailer, None, None)  # type: ignore[arg-type] # email only
    message_id = await queue_email(pool, "nobody@rejected.example")
    stale = await claim_message(pool, lease_seconds=0)
    current = await claim_message(pool, lease_seconds=60)
    async with pool.acquire() as conn:
        await message_queue.finish(conn, [current], "sent")  # as the claim after it recorded it

    try:
        await worker.send(stale)  # 550
    finally:
        await mailer.close()

    assert await pool.fetchval("SELECT status FROM messages WHERE id = $1", message_id) == "sent"
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1, "no alert about an email that went"


async def test_a_secret_the_notifiers_key_ring_cannot_open_never_counts_against_the_endpoint(
    pool: asyncpg.Pool, http: HttpReceiver, client: aiohttp.ClientSession
) -> None:
    retired_key = SecretBox(f"retired:{generate_key()}")  # removed from the ring before the secret was sealed again
    endpoint_id = await queue_delivery(pool, http.url("unsignable"), box=retired_key, events=3)
    # Were these the endpoint's failures, its first attempt would fail each event, and the second disable it.
    worker = WebhookWorker(
        pool,
        settings(1025, webhook_retry_schedule_seconds=[0.0], webhook_disable_after_failed_events=2),
        client,
        SecretBox(TEST_SECRET_KEY),
    )

    for delivery in await webhook_store.claim_due(pool, 10, [], lease_seconds=60, **CAPS):
        await worker.deliver(delivery)

    assert http.received["unsignable"] == [], "nothing unsigned was sent"
    endpoint = await pool.fetchrow(
        "SELECT enabled, consecutive_failures FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    assert tuple(endpoint) == (True, 0), "the endpoint is neither counted as failing nor disabled"
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0, "no webhook_endpoint.disabled is announced"
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0, "and the merchant's team is not alerted"
    deliveries = await pool.fetch(
        "SELECT status, next_attempt_at > now() AS later FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id
    )
    assert [tuple(d) for d in deliveries] == [("pending", True)] * 3, "each waits to be signed once the key is back"


async def test_a_rolled_from_secret_that_does_not_open_leaves_the_current_one_to_sign(
    pool: asyncpg.Pool, http: HttpReceiver, client: aiohttp.ClientSession
) -> None:
    current = new_signing_secret()
    retired_key = SecretBox(f"retired:{generate_key()}")
    await queue_delivery(pool, http.url("rolled"), secret=current, previous=(new_signing_secret(), retired_key))
    worker = WebhookWorker(pool, settings(1025), client, SecretBox(TEST_SECRET_KEY))

    [delivery] = await webhook_store.claim_due(pool, 10, [], lease_seconds=60, **CAPS)
    with capture_logs(processors=[_redact]) as logs:  # as the log renders it: redacted where it must be
        await worker.deliver(delivery)

    [unreadable] = [line for line in logs if line["event"] == "webhook_secret_unreadable"]
    assert unreadable["which_secret"] == "previous", "the line says which of the endpoint's secrets did not open"
    [arrived] = http.received["rolled"]
    Webhook(current).verify(arrived.body, arrived.headers)  # raises unless signed with the current secret
    assert await pool.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", delivery.id) == "succeeded"


async def test_a_claim_counts_what_is_in_flight_without_reading_an_endpoints_backlog(
    pool: asyncpg.Pool, http: HttpReceiver
) -> None:
    """An endpoint that is down keeps its deliveries in backoff, pending but not due: counting what each endpoint
    has in flight, the claim read the whole of that backlog, under the lock every claim waits on."""
    endpoint_id = await queue_delivery(pool, http.url("down"), events=1)  # due now
    await pool.execute(
        "INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
        " SELECT gen_random_uuid(), 'mer_1', 'refund.approved', now(), '{}' FROM generate_series(1, 100000)"
    )
    await pool.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id, next_attempt_at)"
        " SELECT $1, 'mer_1', event_id, now() + interval '1 hour' FROM webhook_events"
        " WHERE event_id NOT IN (SELECT event_id FROM webhook_deliveries)",
        endpoint_id,
    )
    async with pool.acquire() as conn:
        claim = conn.transaction()
        await claim.start()
        plan = await conn.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {webhook_store._CLAIM}", 10, 60.0, [], 8, 16
        )
        claimed = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE locked_until > now()")
        await claim.rollback()
    top = json.loads(plan)[0]["Plan"]
    assert claimed == 1
    read = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    assert read < 100, f"the claim read {read} blocks"
