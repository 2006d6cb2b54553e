"""The notifier in-process on the real broker and PostgreSQL, and helpers to feed it events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from refundflow_notifier.app import MIGRATIONS, create_app
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.database import create_pool
from refundflow_shared.events import (
    Event,
    EventData,
    NotificationSettingsConfigured,
    RefundSucceeded,
    WebhookEndpointConfigured,
    topic_for,
)
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.secret_box import SecretBox, generate_key
from tests.conftest import create_database
from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS
from tests.support.probe_service import eventually

TEST_SECRET_KEY = generate_key()
TEST_INTERNAL_TOKEN = "test-internal-token"  # intake's token for the notifier's internal API


def notifier_settings(database_url: str, kafka: str, smtp_port: int, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "smtp_port": smtp_port,
        "smtp_timeout_seconds": 2.0,
        "mail_from": "Refundflow <refunds@refundflow.test>",
        "webhook_secret_key": TEST_SECRET_KEY,
        "refundflow_internal_token": TEST_INTERNAL_TOKEN,
        "refundflow_allow_private_webhook_urls": True,  # the test receivers listen on 127.0.0.1
        "consumer_retry_base_seconds": 0.05,
        "consumer_session_timeout_ms": CONSUMER_SESSION_TIMEOUT_MS,
        "outbox_poll_interval_seconds": 0.2,
        "message_poll_interval_seconds": 0.1,
        "message_retry_schedule_seconds": [0, 0.2, 0.2],
        "email_order_wait_seconds": 3.0,  # "on its way" alone waits this long for its approval email
        "webhook_poll_interval_seconds": 0.1,
        "webhook_retry_schedule_seconds": [0, 0.2, 0.2, 0.3],
        "webhook_timeout_seconds": 2.0,  # room for a loaded machine; the slow answers in tests take 3 s
        "webhook_disable_after_failed_events": 2,
        **overrides,
    }
    return NotifierSettings.model_validate(values)


class EventFeed:
    """Publishes events as the other services' relays would: CloudEvents in Kafka binary mode."""

    def __init__(self, producer: AIOKafkaProducer, prefix: str) -> None:
        self._producer, self._prefix = producer, prefix
        self._sequences: dict[str, int] = {}

    async def publish(self, data: EventData) -> Event:
        key = data.partition_key()
        self._sequences[key] = self._sequences.get(key, 0) + 1
        event = Event.wrap(data, source="refundflow/test", sequence=self._sequences[key])
        await self.redeliver(event)
        return event

    async def redeliver(self, event: Event) -> None:
        await self._producer.send_and_wait(
            topic_for(event.type, self._prefix),
            event.kafka_value(),
            key=event.partition_key.encode(),
            headers=[(k, v.encode()) for k, v in event.kafka_headers().items()],
        )


@asynccontextmanager
async def running_notifier(settings: NotifierSettings) -> AsyncIterator[tuple[EventFeed, asyncpg.Pool]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
        await producer.start()
        pool = await asyncpg.create_pool(settings.database_url, server_settings={"search_path": "notifier"})
        assert pool is not None
        try:
            yield EventFeed(producer, settings.topic_prefix), pool
        finally:
            await pool.close()
            await producer.stop()


@asynccontextmanager
async def notifier_database(postgres_url: str, max_size: int = 3) -> AsyncIterator[asyncpg.Pool]:
    """A new database with the notifier's schema, and a pool on it: the notifier's SQL, with no notifier running."""
    dsn = await create_database(postgres_url)
    await apply_migrations(dsn, "notifier", MIGRATIONS)
    pool = await create_pool(dsn, "notifier", max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


def seal_slack_url(url: str, merchant_id: str) -> str:
    """As intake sends it: sealed with the shared key, bound to the merchant."""
    return SecretBox(TEST_SECRET_KEY).seal(url, context=merchant_id)


async def configure_team(
    feed: EventFeed,
    pool: asyncpg.Pool,
    merchant_id: str,
    *,
    slack: str | None = None,
    team_email: str | None = None,
    sender_name: str | None = "Acme Software",
    reply_to: str | None = "support@acme.example",
) -> None:
    await feed.publish(
        NotificationSettingsConfigured(
            merchant_id=merchant_id,
            team_email=team_email,
            sealed_slack_webhook_url=seal_slack_url(slack, merchant_id) if slack else None,
            sender_name=sender_name,
            reply_to=reply_to,
        )
    )

    async def stored() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM merchant_settings WHERE merchant_id = $1", merchant_id))

    await eventually(stored, timeout=60)


async def configure_endpoint(
    feed: EventFeed,
    pool: asyncpg.Pool,
    merchant_id: str,
    url: str,
    events: list[str],
    *,
    secret: str,
    enabled: bool = True,
    version: int = 1,
) -> str:
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    await feed.publish(
        WebhookEndpointConfigured(
            merchant_id=merchant_id,
            endpoint_id=endpoint_id,
            url=url,
            event_types=events,
            enabled=enabled,
            encrypted_secret=SecretBox(TEST_SECRET_KEY).seal(secret, context=endpoint_id),
            version=version,
        )
    )

    async def stored() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM webhook_endpoints WHERE id = $1", endpoint_id))

    await eventually(stored, timeout=60)
    return endpoint_id


def succeeded(merchant_id: str, amount: int = 4999) -> RefundSucceeded:
    """A refund of one of the merchant's payments that succeeded: a new payment and refund each time."""
    suffix = uuid.uuid4().hex[:10]
    return RefundSucceeded(
        merchant_id=merchant_id,
        payment_id=f"pay_{suffix}",
        refund_id=f"ref_{suffix}",
        customer_email="ada@example.com",
        amount=amount,
        currency="EUR",
        provider_refund_id=f"re_{suffix}",
    )


async def one_waiting_for_the_other(
    one: asyncpg.Connection,
    other: asyncpg.Connection,
    *,
    first: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]],
    then: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]],
) -> None:
    """Two transactions at once: ``one`` runs ``first`` and holds on; ``other`` runs ``then``, which waits for it
    (a lock), until ``one`` commits; then ``other`` commits too."""
    held = one.transaction()
    await held.start()
    await first(one)
    async with other.transaction():
        racing = asyncio.create_task(then(other))
        await asyncio.sleep(0.5)  # it waits for the held transaction
        await held.commit()
        await racing
