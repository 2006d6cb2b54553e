"""A real intake (in-process, via httpx) on a real PostgreSQL and broker, with a clock tests can move."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from refundflow_intake.app import create_app
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.events import Event, EventData, topic_for
from refundflow_shared.secret_box import generate_key
from tests.conftest import create_database
from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS
from tests.support.probe_service import eventually

ADMIN_TOKEN = "test-admin-token"
ADMIN: dict[str, str] = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Headers = dict[str, str]


@dataclass
class MovableClock:
    """Real time plus an offset that tests advance instead of waiting."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@dataclass
class IntakeUnderTest:
    client: httpx.AsyncClient
    db: asyncpg.Pool
    settings: IntakeSettings
    clock: MovableClock
    app: FastAPI
    merchant_ids: dict[str, str] = field(default_factory=dict)

    @property
    def links(self) -> CustomerLinks:
        """What mints the customers' portal links, as the app does."""
        links: CustomerLinks = self.app.state.customer_links
        return links

    async def merchant(self) -> Headers:
        """A new merchant; returns the Authorization header of its first key."""
        response = await self.client.post("/v1/merchants", json={"name": "Acme"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        created = response.json()
        self.merchant_ids[created["api_key"]] = created["id"]
        return {"Authorization": f"Bearer {created['api_key']}"}

    async def merchant_id(self, merchant: Headers) -> str:
        key = merchant["Authorization"].removeprefix("Bearer ")
        if key not in self.merchant_ids:
            keys = (await self.client.get("/v1/api-keys", headers=merchant)).json()["data"]
            assert keys, key
            owner = await self.db.fetchval("SELECT merchant_id FROM api_keys WHERE id = $1", keys[0]["id"])
            self.merchant_ids[key] = owner
        return self.merchant_ids[key]

    async def second_key(self, merchant: Headers, name: str = "second") -> Headers:
        response = await self.client.post("/v1/api-keys", headers=merchant, json={"name": name})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['api_key']}"}

    async def payment(self, merchant: Headers, **overrides: Any) -> dict[str, Any]:
        """A captured payment of the merchant's, registered by the platform (admin token)."""
        body: dict[str, Any] = {
            "merchant_id": await self.merchant_id(merchant),
            "customer_email": "ada@example.com",
            "customer_name": "Ada Lovelace",
            "amount": 10_000,
            "currency": "EUR",
            "provider_payment_id": f"pi_{uuid.uuid4().hex}",
            "paid_at": (self.clock() - timedelta(days=2)).isoformat(),
            "product": {"id": "prod_pro", "name": "Pro plan", "kind": "one_time", "category": "digital"},
            **overrides,
        }
        response = await self.client.post("/v1/payments", headers=ADMIN, json=body)
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def subscription_payment(
        self, merchant: Headers, *, period_days: int = 28, **overrides: Any
    ) -> dict[str, Any]:
        start = self.clock() - timedelta(days=3)
        return await self.payment(
            merchant,
            paid_at=start.isoformat(),
            product={"id": "prod_monthly", "name": "Monthly plan", "kind": "subscription", "category": "service"},
            subscription={
                "id": f"sub_{uuid.uuid4().hex[:12]}",
                "current_period_start": start.isoformat(),
                "current_period_end": (start + timedelta(days=period_days)).isoformat(),
            },
            **overrides,
        )

    async def refund(self, merchant: Headers, payment_id: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment_id, "reason": "requested_by_customer", **body},
        )
        assert response.status_code == 201, response.text
        refund: dict[str, Any] = response.json()
        return refund

    async def staged(self, event_type: str, partition_key: str) -> list[dict[str, Any]]:
        """The payloads intake wrote to its outbox for one payment (or merchant), oldest first."""
        rows = await self.db.fetch(
            "SELECT payload FROM outbox WHERE event_type = $1 AND partition_key = $2 ORDER BY id",
            event_type,
            partition_key,
        )
        return [json.loads(bytes(r["payload"])) for r in rows]

    async def written(self) -> tuple[int, int]:
        """Rows that a refused request must not have added: refunds and outbox events."""
        return await self.db.fetchval("SELECT count(*) FROM refunds"), await self.db.fetchval(
            "SELECT count(*) FROM outbox"
        )

    async def publish(self, data: EventData | Event, *, source: str = "refundflow/test-billing") -> Event:
        """Deliver an event to intake's topics as another service's relay would (an ``Event``: once more, as an
        operator's replay of its dead letter does)."""
        event = data if isinstance(data, Event) else Event.wrap(data, source=source, sequence=1)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_for(event.type, self.settings.topic_prefix),
                event.kafka_value(),
                key=event.partition_key.encode(),
                headers=[(k, v.encode()) for k, v in event.kafka_headers().items()],
            )
        finally:
            await producer.stop()
        return event

    async def handled(self, *events: Event) -> None:
        """Wait until intake's inbox recorded every one of ``events``."""
        ids = [e.id for e in events]

        async def all_handled() -> bool:
            count = await self.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])", ids)
            return bool(count == len(ids))

        await eventually(all_handled, timeout=30)


@asynccontextmanager
async def running_intake(postgres_url: str, kafka_bootstrap: str, **overrides: Any) -> AsyncIterator[IntakeUnderTest]:
    """``overrides`` replace settings, e.g. ``refundflow_allow_private_webhook_urls=False`` for URL rules."""
    values: dict[str, Any] = {
        "database_url": await create_database(postgres_url),
        "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
        "refundflow_admin_token": ADMIN_TOKEN,
        "outbox_poll_interval_seconds": 0.2,
        "consumer_retry_base_seconds": 0.05,
        "consumer_retry_max_seconds": 0.5,
        "consumer_session_timeout_ms": CONSUMER_SESSION_TIMEOUT_MS,
        "review_check_interval_seconds": 0.2,
        "balance_fold_interval_seconds": 0.2,
        "awaited_event_wait_seconds": 3.0,  # a payment or success it waits for comes within a second
        "webhook_secret_key": generate_key(),
        "refundflow_allow_private_webhook_urls": True,  # test receivers listen on 127.0.0.1
        "dashboard_cookie_secure": False,  # the test client talks plain http
    }
    settings = IntakeSettings(**{**values, **overrides})
    clock = MovableClock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            pool = await asyncpg.create_pool(settings.database_url, server_settings={"search_path": "intake"})
            try:
                yield IntakeUnderTest(client=client, db=pool, settings=settings, clock=clock, app=app)
            finally:
                await pool.close()
