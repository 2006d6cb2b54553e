"""Refund lifecycles driven over the merchant API, and the merchant's webhook receiver.

A lifecycle: the platform registers a payment, the merchant asks for a refund and approves it; it is complete once
the customer's email is at the SMTP sink and the ``refund.succeeded`` webhook reached the merchant's receiver.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import orjson

from benchmarks.http_wire import HttpClient, gather_bounded, serve

SLOW_RECEIVER_SECONDS = 0.2


@dataclass
class Merchant:
    id: str
    api_key: str
    endpoint_id: str


@dataclass
class Lifecycle:
    merchant: Merchant
    started: float = 0.0  # registering the payment was sent (wall clock, as the database's)
    approve_sent: float = 0.0
    payment_id: str = ""
    refund_id: str = ""


@dataclass
class Calls:
    """Every API call's latency, by endpoint."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    first: float = float("inf")
    last: float = 0.0

    async def timed(self, endpoint: str, call: Awaitable[object]) -> object:
        started = time.monotonic()
        answer = await call
        finished = time.monotonic()
        self.seconds[endpoint].append(finished - started)
        self.first, self.last = min(self.first, started), max(self.last, finished)
        return answer


class Receiver:
    """The merchants' webhook receiver: records when each delivery arrived; ``/slow/...`` answers 200 ms late."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[float, str]]] = defaultdict(list)  # refund id -> (time, webhook-id)
        self.by_path: dict[str, list[float]] = defaultdict(list)
        self._server: asyncio.Server | None = None
        self.port = 0

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> float:
        now = time.time()
        data = orjson.loads(body).get("data", {})
        self.arrivals[data.get("refund_id", "")].append((now, headers.get("webhook-id", "")))
        self.by_path[path].append(now)
        return SLOW_RECEIVER_SECONDS if path.startswith("/slow") else 0.0

    async def start(self, port: int) -> None:
        self.port = port
        self._server = await serve("127.0.0.1", port, self.handle)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class Driver:
    def __init__(self, api: HttpClient, admin_token: str) -> None:
        self.api, self.admin_token = api, admin_token
        self.calls = Calls()

    async def merchant(self, name: str, receiver_url: str) -> Merchant:
        created = await self.api.request("POST", "/v1/merchants", {"name": name}, self.admin_token)
        assert isinstance(created, dict)
        endpoint = await self.api.request(
            "POST", "/v1/webhook-endpoints", {"url": receiver_url, "events": ["refund.succeeded"]}, created["api_key"]
        )
        assert isinstance(endpoint, dict)
        return Merchant(created["id"], created["api_key"], endpoint["id"])

    async def register_and_request(self, merchant: Merchant) -> Lifecycle:
        life = Lifecycle(merchant, started=time.time())
        payment = await self.calls.timed(
            "POST /v1/payments",
            self.api.request(
                "POST",
                "/v1/payments",
                {
                    "merchant_id": merchant.id,
                    "customer_email": f"c{uuid.uuid4().hex[:10]}@example.com",
                    "amount": 4999,
                    "currency": "EUR",
                    "provider_payment_id": f"pi_bench_{uuid.uuid4().hex}",
                    "paid_at": datetime.now(UTC).isoformat(),
                    "product": {"id": "prod_bench", "name": "Pro plan", "kind": "one_time"},
                },
                self.admin_token,
            ),
        )
        assert isinstance(payment, dict)
        life.payment_id = payment["id"]
        refund = await self.calls.timed(
            "POST /v1/refunds",
            self.api.request(
                "POST",
                "/v1/refunds",
                {"payment_id": life.payment_id, "reason": "duplicate"},
                merchant.api_key,
                idempotency_key=uuid.uuid4().hex,
            ),
        )
        assert isinstance(refund, dict)
        life.refund_id = refund["id"]
        return life

    async def approve(self, life: Lifecycle) -> Lifecycle:
        life.approve_sent = time.time()
        answer = await self.calls.timed(
            "POST /v1/refunds/{id}/approve",
            self.api.request("POST", f"/v1/refunds/{life.refund_id}/approve", None, life.merchant.api_key),
        )
        assert isinstance(answer, dict) and answer["status"] == "processing", answer
        return life

    async def lifecycle(self, merchant: Merchant) -> Lifecycle:
        return await self.approve(await self.register_and_request(merchant))

    async def closed_loop(self, merchants: list[Merchant], count: int, concurrency: int) -> list[Lifecycle]:
        """``count`` lifecycles, ``concurrency`` clients each starting its next as soon as its last was approved."""
        jobs = [partial(self.lifecycle, merchants[i % len(merchants)]) for i in range(count)]
        return [life for life in await gather_bounded(jobs, concurrency) if isinstance(life, Lifecycle)]

    async def open_loop(self, merchants: list[Merchant], rate: float, count: int) -> list[Lifecycle]:
        """``count`` lifecycles started at ``rate`` per second whatever the answers take (open loop)."""
        started = time.monotonic()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(self.lifecycle(merchants[i % len(merchants)])))
        return list(await asyncio.gather(*tasks))
