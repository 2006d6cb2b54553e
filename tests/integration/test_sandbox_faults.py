"""The sandbox's fault scenarios, as Stripe shows them, driven through the official SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refundflow_sandbox.app import create_app
from refundflow_sandbox.settings import SandboxSettings
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEY = "sk_test_faults"


@dataclass
class Sandbox:
    url: str
    client: stripe.StripeClient
    webhooks: list[dict[str, object]]


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    received: list[dict[str, object]] = []

    async def receive(request: Request) -> Response:
        received.append(json.loads(await request.body()))
        return Response(status_code=200)

    receiver_port, port = free_port(), free_port()
    settings = SandboxSettings(
        late_failure_seconds=0.5,
        revoked_api_keys="sk_test_rolled_at_start",
        webhook_url=f"http://127.0.0.1:{receiver_port}/",
        pending_seconds=3600,
    )
    async with (
        serving(Starlette(routes=[Route("/", receive, methods=["POST"])]), receiver_port),
        serving(create_app(settings), port) as url,
    ):
        client = stripe.StripeClient(
            KEY, base_addresses={"api": url}, max_network_retries=0, http_client=stripe.HTTPXClient()
        )
        yield Sandbox(url, client, received)


def pi(kind: str = "") -> str:
    return f"pi_{kind}{uuid.uuid4().hex[:12]}"


def webhooks_of(sandbox: Sandbox, refund_id: str) -> list[tuple[object, object]]:
    found = []
    for event in sandbox.webhooks:
        data = event["data"]
        assert isinstance(data, dict)
        if data["object"]["id"] == refund_id:
            found.append((event["type"], data["object"]["status"]))
    return found


def webhooks_arrived(sandbox: Sandbox, refund_id: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def arrived() -> bool:
        return len(webhooks_of(sandbox, refund_id)) >= count

    return arrived


async def test_a_revoked_key_is_answered_401_api_key_expired_until_restored(sandbox: Sandbox) -> None:
    rolled = stripe.StripeClient(
        "sk_test_rolled_at_start", base_addresses={"api": sandbox.url}, http_client=stripe.HTTPXClient()
    )
    with pytest.raises(stripe.AuthenticationError) as refused:
        await rolled.v1.refunds.list_async(params={"payment_intent": pi()})
    assert refused.value.http_status == 401
    assert isinstance(body := refused.value.json_body, dict) and body["error"]["code"] == "api_key_expired"

    async with httpx.AsyncClient(base_url=f"{sandbox.url}/v1/_sandbox/api_keys") as controls:
        assert (await controls.get("/sk_test_rolled_at_start")).json()["refused_requests"] == 1
        await controls.post("/sk_test_rolled_at_start/restore")
        await rolled.v1.refunds.list_async(params={"payment_intent": pi()})
        await controls.post(f"/{KEY}/revoke")
        with pytest.raises(stripe.AuthenticationError):
            await sandbox.client.v1.refunds.create_async(params={"payment_intent": pi(), "amount": 100})
        await controls.post(f"/{KEY}/restore")


async def test_a_late_failure_refund_succeeds_then_fails_with_stripes_webhooks(sandbox: Sandbox) -> None:
    intent = pi("late_failure_")
    made = await sandbox.client.v1.refunds.create_async(params={"payment_intent": intent, "amount": 700})
    assert made.status == "succeeded"

    async def failed() -> bool:
        return (await sandbox.client.v1.refunds.retrieve_async(made.id)).status == "failed"

    await eventually(failed, timeout=10)
    again = await sandbox.client.v1.refunds.retrieve_async(made.id)
    assert again.failure_reason == "expired_or_canceled_card"
    await eventually(webhooks_arrived(sandbox, made.id, 2), timeout=10)
    assert webhooks_of(sandbox, made.id) == [("refund.failed", "failed"), ("charge.refund.updated", "failed")]
    # The money is back on the charge: the whole charge can be refunded again.
    await sandbox.client.v1.refunds.create_async(params={"payment_intent": intent, "amount": 1_000_000})


async def test_pending_refunds_settle_or_fail_when_told(sandbox: Sandbox) -> None:
    settled = await sandbox.client.v1.refunds.create_async(params={"payment_intent": pi("pending_"), "amount": 5})
    failing = await sandbox.client.v1.refunds.create_async(params={"payment_intent": pi("pending_"), "amount": 5})
    assert (settled.status, failing.status) == ("pending", "pending")

    async with httpx.AsyncClient(base_url=f"{sandbox.url}/v1/_sandbox/refunds") as controls:
        assert (await controls.post(f"/{settled.id}/settle")).json()["status"] == "succeeded"
        answer = await controls.post(f"/{failing.id}/fail", params={"failure_reason": "declined"})
        assert (answer.json()["status"], answer.json()["failure_reason"]) == ("failed", "declined")
        assert (await controls.post(f"/{settled.id}/settle")).status_code == 400, "only a pending refund settles"

    await eventually(webhooks_arrived(sandbox, failing.id, 2), timeout=10)
    assert webhooks_of(sandbox, settled.id) == [("refund.updated", "succeeded")]


async def test_an_unknown_payment_intent_is_resource_missing(sandbox: Sandbox) -> None:
    for call in (
        sandbox.client.v1.refunds.list_async(params={"payment_intent": pi("missing_")}),
        sandbox.client.v1.refunds.create_async(params={"payment_intent": pi("missing_"), "amount": 5}),
    ):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            await call
        assert (missing.value.http_status, missing.value.code) == (400, "resource_missing")


async def test_subscriptions_can_be_missing_or_flaky(sandbox: Sandbox) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await sandbox.client.v1.subscriptions.cancel_async(f"sub_missing_{uuid.uuid4().hex}")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")

    flaky = f"sub_flaky_{uuid.uuid4().hex}"
    for _ in range(2):  # SANDBOX_FLAKY_FAILURES
        with pytest.raises(stripe.APIError) as failed:
            await sandbox.client.v1.subscriptions.cancel_async(flaky)
        assert failed.value.http_status == 500
    assert (await sandbox.client.v1.subscriptions.cancel_async(flaky)).status == "canceled"


async def test_a_canceled_subscription_cannot_be_canceled_again_as_at_stripe(sandbox: Sandbox) -> None:
    """Stripe answers 404 resource_missing to a cancel of a canceled subscription; reading it still shows it."""
    subscription_id = f"sub_{uuid.uuid4().hex}"
    canceled = await sandbox.client.v1.subscriptions.cancel_async(subscription_id)
    assert canceled.status == "canceled"

    with pytest.raises(stripe.InvalidRequestError) as again:
        await sandbox.client.v1.subscriptions.cancel_async(subscription_id)
    assert (again.value.http_status, again.value.code) == (404, "resource_missing")
    held = await sandbox.client.v1.subscriptions.retrieve_async(subscription_id)
    assert (held.status, held.canceled_at) == ("canceled", canceled.canceled_at)


async def test_every_provider_call_is_answered_after_the_configured_latency() -> None:
    port = free_port()
    async with serving(create_app(SandboxSettings(latency_ms=300)), port) as url:
        client = stripe.StripeClient(KEY, base_addresses={"api": url}, http_client=stripe.HTTPXClient())
        started = time.monotonic()
        await client.v1.refunds.create_async(params={"payment_intent": pi(), "amount": 5})
        assert time.monotonic() - started >= 0.3
