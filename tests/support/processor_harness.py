"""A real processor (in-process, on a real port) against a real sandbox, broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from refundflow_processor.app import create_app as create_processor
from refundflow_processor.payment_provider import PaymentProvider
from refundflow_processor.settings import ProcessorSettings
from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from refundflow_sandbox.webhooks import stripe_signature
from refundflow_shared.events import (
    Event,
    EventData,
    PaymentSucceeded,
    Product,
    RefundApproved,
    SubscriptionCancelRequested,
    SubscriptionExtensionGranted,
    SubscriptionPeriod,
    topic_for,
)
from refundflow_shared.tracing import EVENT_HEADER
from tests.support.http_servers import serving
from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS, free_port
from tests.support.kafka_reader import headers_of, read_topic

WEBHOOK_SECRET = "whsec_test_processor"
STRIPE_KEY = "sk_test_processor"  # the processor's key at the sandbox
# The harness gives up on the provider after 1 s, so that tests of timeouts run fast. Where a test counts the
# provider's failures, it passes these instead: a slow answer on a loaded machine is then not one more failure.
PATIENT_CLIENT: dict[str, Any] = {"stripe_timeout_seconds": 15.0, "provider_call_deadline_seconds": 20.0}


@dataclass
class ProcessorUnderTest:
    settings: ProcessorSettings
    sandbox_url: str
    url: str
    db: asyncpg.Pool

    async def publish(self, data: EventData, *, traceparent: str | None = None) -> Event:
        return await publish_event(
            self.settings.kafka_bootstrap_servers, self.settings.topic_prefix, data, traceparent=traceparent
        )

    async def deliver_again(self, event: Event) -> None:
        """Deliver an event already delivered, as it was (its id and time): what a rewound consumer reads."""
        await send_event(self.settings.kafka_bootstrap_servers, self.settings.topic_prefix, event)

    async def restore_before(self, event: Event, refund_id: str) -> None:
        """The database as a backup taken before ``event`` (the refund's approval) was handled: the refund, its
        attempts and the inbox's record of the event are gone."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM refund_attempts WHERE refund_id = $1", refund_id)
            await conn.execute("DELETE FROM refunds WHERE refund_id = $1", refund_id)
            await conn.execute("DELETE FROM inbox WHERE event_id = $1", event.id)

    async def refund_status(self, refund_id: str) -> str | None:
        status: str | None = await self.db.fetchval("SELECT status FROM refunds WHERE refund_id = $1", refund_id)
        return status

    async def attempts(self, refund_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT state FROM refund_attempts WHERE refund_id = $1 ORDER BY attempt", refund_id)
        return [r["state"] for r in rows]

    async def staged(self, event_type: str, *, about: str) -> list[dict[str, Any]]:
        """Events the processor committed to its outbox whose data mentions ``about``: exact, and no wait."""
        rows = await self.db.fetch("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id", event_type)
        found = [json.loads(bytes(r["payload"])) for r in rows]
        return [data for data in found if about in data.values()]

    async def sandbox(self, method: str, path: str, **params: str) -> dict[str, Any]:
        """Call the sandbox's test controls (``/v1/_sandbox/...``)."""
        async with httpx.AsyncClient() as client:
            answer = await client.request(method, f"{self.sandbox_url}/v1/_sandbox/{path}", params=params)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def provider_refunds(self, payment_intent: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"{self.sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": payment_intent}
            )
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    async def events(self, event_type: str, *, expected: int, about: str) -> list[dict[str, Any]]:
        """Distinct events of a type (by CloudEvents id) whose data mentions ``about``, once ``expected`` of them are
        on the topic (or 20 s passed). The topic is shared by a module's tests: their earlier records count towards
        no one's ``expected`` but their own."""
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            left = deadline - asyncio.get_running_loop().time()
            records = await read_topic(
                self.settings.kafka_bootstrap_servers,
                topic_for(event_type, self.settings.topic_prefix),
                expected=expected,
                timeout=max(left, 0.1),
            )
            seen: dict[str, dict[str, Any]] = {}
            for record in records:
                data = json.loads(record.value or b"")
                if about in data.values():
                    seen[headers_of(record)["ce_id"]] = data
            if len(seen) >= expected or left <= 0:
                return list(seen.values())
            await asyncio.sleep(0.2)


async def publish_event(kafka: str, prefix: str, data: EventData, *, traceparent: str | None = None) -> Event:
    """Deliver an event to its topic as another service's relay would (in the trace ``traceparent`` names)."""
    event = Event.wrap(data, source="refundflow/test", sequence=1)
    await send_event(kafka, prefix, event, traceparent=traceparent)
    return event


async def send_event(kafka: str, prefix: str, event: Event, *, traceparent: str | None = None) -> None:
    headers = event.kafka_headers() | ({EVENT_HEADER: traceparent} if traceparent else {})
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_for(event.type, prefix),
            event.kafka_value(),
            key=event.partition_key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
    finally:
        await producer.stop()


async def deliver_webhook(processor: ProcessorUnderTest, event_type: str, refund: dict[str, Any]) -> httpx.Response:
    """Deliver a refund's webhook signed as Stripe signs it, with the endpoint's secret."""
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": event_type, "data": {"object": refund}}
    payload = json.dumps(event).encode()
    signature = stripe_signature(payload, WEBHOOK_SECRET, int(time.time()))
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{processor.url}/v1/provider-webhooks/stripe",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature},
        )


def approval(provider_payment_id: str, amount: int = 2_500, currency: str = "EUR") -> RefundApproved:
    suffix = uuid.uuid4().hex[:10]
    return RefundApproved(
        refund_id=f"ref_{uuid.uuid4().hex}",  # intake's shape: the sync job tells ours apart by it
        payment_id=f"pay_{suffix}",
        merchant_id="mer_test",
        customer_email="ada@example.com",
        amount=amount,
        currency=currency,
        provider_payment_id=provider_payment_id,
        payment_amount=10_000,
        approved_by="api_key:key_test",
    )


def subscription_paid(merchant_id: str, payment_id: str, subscription_id: str) -> PaymentSucceeded:
    """Billing's word that ``payment_id`` is the merchant's payment of ``subscription_id``."""
    now = datetime.now(UTC)
    return PaymentSucceeded(
        payment_id=payment_id,
        merchant_id=merchant_id,
        customer_email="ada@example.com",
        amount=1_000,
        currency="EUR",
        provider_payment_id=payment_intent(),
        paid_at=now - timedelta(days=1),
        product=Product(id="prod_plan", name="Plan", kind="subscription"),
        subscription=SubscriptionPeriod(
            id=subscription_id,
            current_period_start=now - timedelta(days=1),
            current_period_end=now + timedelta(days=29),
        ),
    )


async def publish_with_its_payment(
    processor: ProcessorUnderTest, request: SubscriptionCancelRequested | SubscriptionExtensionGranted
) -> Event:
    """A cancel or an extension, and the payment.succeeded of the payment and subscription it names (as intake
    sends them: the processor changes only the subscription of the payment named, of its merchant)."""
    await processor.publish(subscription_paid(request.merchant_id, request.payment_id, request.subscription_id))
    return await processor.publish(request)


def payment_intent(behaviour: str = "") -> str:
    return f"pi_{behaviour}{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def running_processor(
    database_url: str,
    kafka: str,
    prefix: str,
    *,
    webhooks: bool = True,
    provider_reachable: bool = True,
    provider: PaymentProvider | None = None,
    sandbox: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[ProcessorUnderTest]:
    processor_port, sandbox_port = free_port(), free_port()
    webhook_url = f"http://127.0.0.1:{processor_port}/v1/provider-webhooks/stripe" if webhooks else None
    sandbox_settings = SandboxSettings.model_validate(
        {
            "port": sandbox_port,
            "pending_seconds": 1.0,
            "timeout_seconds": 1.0,
            "timeout_margin_seconds": 0.5,
            "webhook_url": webhook_url,
            "webhook_secret": WEBHOOK_SECRET,
            "default_currency": "eur",  # the test payments' currency: refunds made elsewhere are in it too
            **(sandbox or {}),
        }
    )
    api_base = f"http://127.0.0.1:{sandbox_port if provider_reachable else free_port()}"
    settings = ProcessorSettings.model_validate(
        {
            "database_url": database_url,
            "kafka_bootstrap_servers": kafka,
            "topic_prefix": prefix,
            "http_port": processor_port,
            "stripe_api_base": api_base,
            "stripe_api_key": STRIPE_KEY,
            "stripe_sandbox": True,
            "stripe_timeout_seconds": 1.0,
            "provider_call_deadline_seconds": 2.0,
            "executor_lease_margin_seconds": 1.0,
            "provider_auth_pause_seconds": 0.2,
            "provider_auth_pause_max_seconds": 1.0,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "provider_retry_base_seconds": 0.05,
            "provider_retry_max_seconds": 0.5,
            "provider_retry_budget": 6,
            "executor_poll_interval_seconds": 0.2,
            "sync_interval_seconds": 0.5,
            "sync_pending_after_seconds": 300,
            "outbox_poll_interval_seconds": 0.2,
            "consumer_session_timeout_ms": CONSUMER_SESSION_TIMEOUT_MS,
            **overrides,
        }
    )
    async with (
        serving(create_sandbox(sandbox_settings), sandbox_port) as sandbox_url,
        serving(create_processor(settings, provider), processor_port) as url,
    ):
        db = await asyncpg.create_pool(database_url, server_settings={"search_path": "processor"})
        try:
            yield ProcessorUnderTest(settings, sandbox_url, url, db)
        finally:
            await db.close()
