"""The notifier's workers are woken by queued work only: an event no endpoint subscribes to (every event of a
merchant without webhooks), a delivery or message already queued, or a message kept as refused wakes nobody."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest

from refundflow_notifier import webhook_store
from refundflow_shared.events import Event, RefundRequested, RefundSucceeded, WebhookEndpointConfigured
from tests.support.notifier_harness import notifier_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

DELIVERIES, MESSAGES = "notifier_webhook_deliveries", "notifier_messages"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with notifier_database(postgres_url) as pool:
        yield pool


class Wakeups:
    """The notifications on one channel, in the order they arrive (their commits' order)."""

    def __init__(self) -> None:
        self.woken: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, _: object, __: int, channel: str, ___: str) -> None:
        self.woken.put_nowait(channel)

    async def next(self) -> None:
        await asyncio.wait_for(self.woken.get(), timeout=10)

    def none_left(self) -> bool:
        return self.woken.empty()


@asynccontextmanager
async def listening(pool: asyncpg.Pool, channel: str) -> AsyncIterator[Wakeups]:
    wakeups = Wakeups()
    async with pool.acquire() as listener:
        await listener.add_listener(channel, wakeups)
        try:
            yield wakeups
        finally:
            await listener.remove_listener(channel, wakeups)


async def queue(pool: asyncpg.Pool, event: Event) -> int:
    async with pool.acquire() as conn, conn.transaction():
        queued, _ = await webhook_store.queue_events(conn, [(event, None)], max_endpoints=10)
    return queued


async def test_only_a_queued_delivery_wakes_the_webhook_workers(pool: asyncpg.Pool) -> None:
    merchant_id = f"mer_{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn:
        await webhook_store.apply_endpoint(
            conn,
            WebhookEndpointConfigured(
                merchant_id=merchant_id,
                endpoint_id=f"we_{uuid.uuid4().hex[:12]}",
                url="https://merchant.example/hooks",
                event_types=["refund.succeeded"],
                enabled=True,
                encrypted_secret="sealed",
                version=1,
            ),
            datetime.now(UTC),
        )
    fields = {"merchant_id": merchant_id, "payment_id": "pay_1", "refund_id": "ref_1", "amount": 499, "currency": "EUR"}
    unsubscribed = Event.wrap(
        RefundRequested(**fields, customer_email="ada@example.com", reason="duplicate", channel="api"),
        source="refundflow/intake",
        sequence=1,
    )
    subscribed = Event.wrap(
        RefundSucceeded(**fields, customer_email="ada@example.com", provider_refund_id="re_1"),
        source="refundflow/processor",
        sequence=2,
    )
    async with listening(pool, DELIVERIES) as wakeups:
        assert await queue(pool, subscribed) == 1
        await wakeups.next()  # the control: a queued delivery wakes them

        assert await queue(pool, unsubscribed) == 0
        assert await queue(pool, subscribed) == 0, "queued already: a redelivered event"
        another = Event.wrap(subscribed.data, source="refundflow/processor", sequence=3)
        assert await queue(pool, another) == 1
        # Had the two commits that queued nothing notified, theirs would have come before this one's.
        await wakeups.next()
        assert wakeups.none_left()


async def test_only_a_message_queued_to_send_wakes_the_message_workers(pool: asyncpg.Pool) -> None:
    async def insert(dedupe_key: str, status: str) -> None:
        await pool.execute(
            "INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, body, status)"
            " VALUES ($1, $2, 'mer_1', 'email', 'refund_succeeded', 'ada@example.com', 'email', $3)"
            " ON CONFLICT (dedupe_key) DO NOTHING",
            dedupe_key,
            uuid.uuid4(),
            status,
        )

    async with listening(pool, MESSAGES) as wakeups:
        await insert("first", "pending")
        await wakeups.next()  # the control: a message to send wakes them

        await insert("first", "pending")  # queued already
        await insert("refused", "rejected")  # kept as refused, nothing to send
        await insert("second", "pending")
        await wakeups.next()  # in commit order: after any of the two above
        assert wakeups.none_left()
