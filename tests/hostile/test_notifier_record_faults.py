"""A notifier's worker whose lease ran out (its call took longer, or its record waited) records nothing that undoes
what the claim after it did: it never turns a delivered webhook or a sent email into a failed one, counts a healthy
endpoint's failure, disables it, or frees the lease another instance holds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.message_worker import MessageWorker
from refundflow_notifier.outbound_http import outbound_client
from refundflow_notifier.records import Channel, ClaimedDelivery, ClaimedMessage, DeliveredAttempt
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import SmtpMailer
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.secret_box import SecretBox
from tests.support.notifier_harness import TEST_SECRET_KEY, notifier_database, notifier_settings
from tests.support.notifier_receivers import (
    DEFERRING_DOMAIN,
    CapturingSmtpHandler,
    HttpReceiver,
    http_receiver,
    smtp_server,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
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
    async with notifier_database(postgres_url) as pool:
        yield pool


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with outbound_client(allow_private=True, max_connections=8) as session:
        yield session


def settings(smtp_port: int, **overrides: Any) -> NotifierSettings:
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


async def queue_delivery(pool: asyncpg.Pool, url: str) -> str:
    """An enabled endpoint at ``url`` with one delivery due; the endpoint's id."""
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    sealed = SecretBox(TEST_SECRET_KEY).seal(new_signing_secret(), context=endpoint_id)
    event_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
            " VALUES ($1, 'mer_1', $2, '{refund.approved}', true, $3, 1)",
            endpoint_id,
            url,
            sealed,
        )
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
