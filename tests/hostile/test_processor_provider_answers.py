"""The Stripe adapter reads the provider's answers as hostile: an answer cut short, one that never ends, an empty
200, a proxy's page, or a key that already ran with other parameters is no answer (``ProviderUnavailable``: the
refund is reconciled, never failed), whatever the HTTP client raises. Only Stripe's definite refusals fail it. So
is a date past the year 9999; an extension past the last date a program can hold is refused, and alerted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refundflow_processor.payment_provider import (
    ProviderNotExecuted,
    ProviderRefund,
    ProviderSubscription,
    ProviderUnavailable,
)
from refundflow_processor.stripe_provider import StripeProvider, refund_from_webhook
from refundflow_sandbox.webhooks import stripe_signature
from refundflow_shared.events import PaymentDisputed, SubscriptionExtensionGranted
from tests.support.http_servers import hostile_http_server, serving
from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually
from tests.support.processor_harness import approval, payment_intent, publish_with_its_payment, running_processor
from tests.support.subscription_providers import NoRefundsHere, NoSubscriptionsHere

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("behaviour", ["cut_short", "drip", "ok", "html_408", "html_404", "idempotency_error"])
async def test_an_answer_that_does_not_arrive_whole_is_no_answer(behaviour: str) -> None:
    async with hostile_http_server(behaviour) as provider_api:
        provider = StripeProvider("sk_test_hostile", f"http://127.0.0.1:{provider_api.port}", timeout_seconds=1.0)
        try:
            with pytest.raises(ProviderUnavailable):
                await provider.create_refund(
                    payment_ref="pi_1", amount=100, currency="EUR", idempotency_key="key_1", refund_id="ref_1"
                )
        finally:
            await provider.close()
    assert provider_api.requests and provider_api.requests[0][0] == "v1/refunds", "the call reached the provider"


class GatewayInFrontOfTheProvider:
    """A load balancer in front of the provider (a real HTTP server): its first ``pages`` refund calls get its own
    502 page at once, while the provider still works on them (it receives each ``backend_seconds`` later)."""

    def __init__(self, *, pages: int, backend_seconds: float) -> None:
        self.pages, self.backend_seconds = pages, backend_seconds
        self.upstream = ""  # the provider's base URL, known once it runs
        self.late_calls: list[asyncio.Task[Any]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Request) -> Response:
        forward = self._forward(request, await request.body())
        if request.method == "POST" and request.url.path == "/v1/refunds" and self.pages > 0:
            self.pages -= 1
            self.late_calls.append(asyncio.create_task(self._later(forward)))
            return Response("<html><body>502 Bad Gateway</body></html>", 502, media_type="text/html")
        return await forward

    async def _later(self, forward: Awaitable[Response]) -> Response:
        await asyncio.sleep(self.backend_seconds)
        return await forward

    async def _forward(self, request: Request, body: bytes) -> Response:
        sent = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        url = f"{self.upstream}{request.url.path}?{request.url.query}"
        async with httpx.AsyncClient() as client:
            answer = await client.request(request.method, url, headers=sent, content=body)
        kept = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-encoding")}
        return Response(answer.content, answer.status_code, headers=kept)


async def test_a_load_balancers_5xx_pages_are_no_answer_and_never_give_up_the_key(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Only Stripe's own 5xx (its api_error, stored for the key) proves the key's request finished: a load balancer's
    502 page does not, and the provider may make the refund after it. Counted as Stripe's, two such pages had the
    refund reconciled at once, listed as none before the provider made it, and refunded again under a new key."""
    gateway, port = GatewayInFrontOfTheProvider(pages=2, backend_seconds=3.0), free_port()
    async with (
        serving(gateway.app, port) as gateway_url,
        running_processor(database_url, kafka_bootstrap, topic_prefix, stripe_api_base=gateway_url) as processor,
    ):
        gateway.upstream = processor.sandbox_url
        intent = payment_intent()
        approved = approval(intent)
        await processor.publish(approved)

        async def refunded() -> bool:
            return await processor.refund_status(approved.refund_id) == "succeeded"

        await eventually(refunded, timeout=30)
        await asyncio.gather(*gateway.late_calls)  # the provider has now seen every call the gateway answered
        assert len(await processor.provider_refunds(intent)) == 1
        assert await processor.attempts(approved.refund_id) == ["succeeded"], "the key was never given up"


@pytest.mark.parametrize("call", ["get", "extend"])
async def test_a_subscription_answer_with_a_date_past_any_calendar_is_no_answer(call: str) -> None:
    """A Unix time past the year 9999 is a number, but no date: read, it raised ValueError, which the executors do
    not expect, and the cancel or extension failed on every lease with no retry counted and no alert."""
    async with hostile_http_server("far_future_subscription") as provider_api:
        provider = StripeProvider("sk_test_hostile", f"http://127.0.0.1:{provider_api.port}", timeout_seconds=1.0)
        try:
            with pytest.raises(ProviderUnavailable, match="malformed answer for subscription sub_1"):
                if call == "get":
                    await provider.get_subscription("sub_1")
                else:
                    until = datetime(2027, 1, 1, tzinfo=UTC)
                    await provider.extend_subscription("sub_1", until=until, idempotency_key="key_1", metadata={})
        finally:
            await provider.close()


class EndsAtTheEndOfTime(NoRefundsHere):
    """A provider whose subscription's period ends on the last day a date can hold: a valid date, with no room
    for any days after it."""

    name = "stripe"

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        end = datetime(9999, 12, 30, tzinfo=UTC)
        return ProviderSubscription(subscription_id, "active", False, None, end)

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        raise AssertionError("no period end to extend to")

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderUnavailable("not in this test")


async def test_an_extension_past_the_last_date_is_refused_and_alerted_not_failed_on_every_lease(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=EndsAtTheEndOfTime()) as p:
        granted = SubscriptionExtensionGranted(
            payment_id=f"pay_{uuid.uuid4().hex[:10]}",
            merchant_id="mer_end_of_time",
            subscription_id=f"sub_{uuid.uuid4().hex[:12]}",
            days=7,
            refund_id=f"ref_{uuid.uuid4().hex[:8]}",
            granted_by="user:usr_1",
        )
        await publish_with_its_payment(p, granted)

        async def alerted() -> bool:
            return bool(await p.staged("team_alert.raised", about=granted.payment_id))

        await eventually(alerted, timeout=30)
        [alert] = await p.staged("team_alert.raised", about=granted.payment_id)
        assert alert["kind"] == "subscription_extension_failed"


class StripeAnswering:
    """A provider (a real HTTP server) answering every call with one status and JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=["GET", "POST", "DELETE"])])

    async def _answer(self, _: Request) -> Response:
        return Response(json.dumps(self.body), self.status, media_type="application/json")


def _answering(body: bytes) -> Starlette:
    """A provider that answers every call 200 with ``body``."""

    async def answer(_: Request) -> Response:
        return Response(body, 200, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "DELETE"])])


_NOT_AN_OBJECT = [b"null", b"[]", b'"ok"', b"5"]
_PROVIDER_CALLS = {
    "create_refund": lambda p: p.create_refund(
        payment_ref="pi_1", amount=100, currency="EUR", idempotency_key="key_1", refund_id="ref_1"
    ),
    "get_refund": lambda p: p.get_refund("re_1"),
    "list_refunds": lambda p: p.list_refunds("pi_1"),
    "get_subscription": lambda p: p.get_subscription("sub_1"),
    "cancel_subscription": lambda p: p.cancel_subscription("sub_1", at_period_end=True),
}


@pytest.mark.parametrize("call", list(_PROVIDER_CALLS))
@pytest.mark.parametrize("body", [*_NOT_AN_OBJECT, b'{"object": "list", "data": [null, 5], "has_more": false}'])
async def test_a_2xx_whose_json_is_not_an_object_is_a_malformed_answer(call: str, body: bytes) -> None:
    """Read as if it were an object, it raised AttributeError: the executor gave the attempt back uncounted, and
    the refund was asked for again every second, forever. It is no answer, counted against the budget."""
    port = free_port()
    async with serving(_answering(body), port) as url:
        provider = StripeProvider("sk_test_hostile", url, timeout_seconds=5.0)
        try:
            with pytest.raises(ProviderUnavailable, match="malformed answer"):
                await _PROVIDER_CALLS[call](provider)
        finally:
            await provider.close()


@pytest.mark.parametrize("data", [{"object": None}, {"object": ["re_1"]}, {"object": "re_1"}, None, "x"])
def test_a_signed_webhook_whose_refund_is_not_an_object_is_a_malformed_answer(data: Any) -> None:
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "refund.updated", "data": data}).encode()
    signature = stripe_signature(payload, "whsec_hostile", int(time.time()))
    with pytest.raises(ProviderUnavailable, match="malformed answer"):
        refund_from_webhook(payload, signature, "whsec_hostile")


async def test_a_rate_limited_refund_waits_out_the_throttle_without_spending_its_budget(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Stripe's 429 says the call was not executed and should come again: counted as no answer, eight of them (the
    harness's budget is 6) had the refund reconciled, found absent and failed provider_unavailable, the customer
    told their refund failed. It now waits at least each Retry-After (1 s), spends no budget, and the team hears once
    that the provider keeps deferring it."""
    throttled_calls = 8
    sandbox = {"rate_limited_calls": throttled_calls, "rate_limit_retry_after_seconds": 1}
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, sandbox=sandbox, provider_not_executed_alert_after_seconds=3.0
    ) as processor:
        intent = payment_intent("rate_limited_")
        approved = approval(intent)
        started = time.monotonic()
        await processor.publish(approved)

        async def refunded() -> bool:
            return await processor.refund_status(approved.refund_id) in ("succeeded", "failed")

        await eventually(refunded, timeout=60)
        assert await processor.refund_status(approved.refund_id) == "succeeded"
        assert time.monotonic() - started >= throttled_calls * 1.0, "each Retry-After was waited out"
        assert len(await processor.provider_refunds(intent)) == 1
        calls = await processor.db.fetchval(
            "SELECT provider_calls FROM refunds WHERE refund_id = $1", approved.refund_id
        )
        assert calls == 0, "no call was counted against the budget"
        alerts = await processor.staged("team_alert.raised", about=approved.payment_id)
        assert [alert["kind"] for alert in alerts] == ["provider_not_executing"]
        assert not await processor.staged("refund.failed", about=approved.refund_id)


@pytest.mark.parametrize(("alert_after", "alerts"), [(3600.0, []), (1.5, ["provider_not_executing"])])
async def test_a_throttled_lookup_of_the_refunds_waits_out_the_throttle_without_calling_the_outcome_unknown(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, alert_after: float, alerts: list[str]
) -> None:
    """A refund of a disputed payment is looked up at the provider before any call; the lookup lists the payment's
    refunds. Stripe's 429 to that listing was read as a failed lookup: the outcome marked unknown and the team
    alerted refund_outcome_unknown, the listing asked again after the backoff, not the Retry-After. It now waits at
    least each Retry-After (1 s), stays as it was, and the team hears only once the throttle outlasts
    PROVIDER_NOT_EXECUTED_ALERT_AFTER_SECONDS."""
    throttled_lists = 4
    sandbox = {"rate_limited_calls": 0, "rate_limited_lists": throttled_lists, "rate_limit_retry_after_seconds": 1}
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        sandbox=sandbox,
        provider_not_executed_alert_after_seconds=alert_after,
        sync_interval_seconds=3600.0,  # the sync job's scans would take the listing's throttled answers
    ) as processor:
        approved = approval(payment_intent("rate_limited_"))
        dispute = PaymentDisputed(
            payment_id=approved.payment_id, merchant_id=approved.merchant_id, dispute_id="dp_1", reason="fraudulent"
        )
        recorded = await processor.publish(dispute)

        async def dispute_read() -> bool:  # before the approval: the topics are read in no order
            return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", recorded.id))

        await eventually(dispute_read, timeout=30)
        started = time.monotonic()
        await processor.publish(approved)

        async def failed() -> bool:
            return await processor.refund_status(approved.refund_id) == "failed"

        await eventually(failed, timeout=60)
        assert time.monotonic() - started >= throttled_lists * 1.0, "each Retry-After was waited out"
        [told] = await processor.staged("refund.failed", about=approved.refund_id)
        assert told["failure_reason"] == "payment_disputed"
        raised = await processor.staged("team_alert.raised", about=approved.payment_id)
        assert [alert["kind"] for alert in raised] == alerts
        calls = await processor.db.fetchval(
            "SELECT provider_calls FROM refunds WHERE refund_id = $1", approved.refund_id
        )
        assert calls == 0


@pytest.mark.parametrize("prefix", ["ch_", "py_"])
async def test_a_refund_of_a_charge_names_the_charge_and_succeeds(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, prefix: str
) -> None:
    """Stripe refunds a charge as charge=<id>: named payment_intent=<id>, it answers resource_missing, and every
    refund of a payment registered by its charge failed provider_refused (and its sync scan failed forever)."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix) as processor:
        charge = f"{prefix}{uuid.uuid4().hex[:12]}"
        approved = approval(charge)
        await processor.publish(approved)

        async def finished() -> bool:
            return await processor.refund_status(approved.refund_id) in ("succeeded", "failed")

        await eventually(finished, timeout=30)
        assert await processor.refund_status(approved.refund_id) == "succeeded"
        [made] = await processor.provider_refunds(charge)
        assert (made["charge"], made["metadata"]["refund_id"]) == (charge, approved.refund_id)

        async def scanned() -> bool:
            done = await processor.db.fetchval(
                "SELECT last_synced_at > '-infinity' OR sync_error IS NOT NULL FROM payments WHERE payment_id = $1",
                approved.payment_id,
            )
            return bool(done)

        await eventually(scanned, timeout=30)
        error = await processor.db.fetchval(
            "SELECT sync_error FROM payments WHERE payment_id = $1", approved.payment_id
        )
        assert error is None, "the sync job lists the charge's refunds"
        assert not await processor.staged("refund.external_detected", about=approved.payment_id)


async def test_a_payment_of_the_other_mode_pauses_calls_as_a_refused_key_does(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Stripe's resource_missing "a similar object exists in live mode, but a test mode key was used" says the key is
    of the wrong mode: it failed the refund provider_refused, the customer told so, as if the payment had none."""
    other_mode = StripeAnswering(
        404,
        {
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "payment_intent",
                "message": "No such payment_intent: 'pi_1'; a similar object exists in live mode, but a test mode key"
                " was used to make this request.",
            }
        },
    )
    port = free_port()
    async with (
        serving(other_mode.app, port) as url,
        running_processor(database_url, kafka_bootstrap, topic_prefix, stripe_api_base=url) as processor,
    ):
        approved = approval(payment_intent()).model_copy(update={"merchant_id": f"mer_{uuid.uuid4().hex[:10]}"})
        await processor.publish(approved)

        async def alerted() -> bool:
            return bool(await processor.staged("team_alert.raised", about=approved.merchant_id))

        await eventually(alerted, timeout=30)
        kinds = {alert["kind"] for alert in await processor.staged("team_alert.raised", about=approved.merchant_id)}
        assert "provider_auth_failed" in kinds
        assert await processor.refund_status(approved.refund_id) == "processing"
        assert not await processor.staged("refund.failed", about=approved.refund_id)


class ThrottledThenSlow(NoRefundsHere, NoSubscriptionsHere):
    """Refunds answered, call by call: 429, then three slow timeouts, then 429 again, then made."""

    name = "stripe"

    def __init__(self) -> None:
        self.calls = 0

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        self.calls += 1
        if self.calls in (1, 5):
            raise ProviderNotExecuted("rate_limit: too many requests")
        if self.calls in (2, 3, 4):
            await asyncio.sleep(0.5)
            raise ProviderUnavailable("read timeout")
        return ProviderRefund("re_throttled", "succeeded", amount, currency, None, {"refund_id": refund_id})


async def test_throttling_broken_by_calls_that_got_no_answer_is_not_told_as_one_long_deferral(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The first 429's time was kept for the attempt's life: one 429, then 1.5 s of ordinary timeouts, then one more
    429 alerted the team that the provider had kept deferring the refund since the first (its threshold here 1 s)."""
    provider = ThrottledThenSlow()
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, provider=provider, provider_not_executed_alert_after_seconds=1.0
    ) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)

        async def refunded() -> bool:
            return await processor.refund_status(approved.refund_id) == "succeeded"

        await eventually(refunded, timeout=60)
        assert provider.calls == 6
        alerts = await processor.staged("team_alert.raised", about=approved.payment_id)
        assert [alert["kind"] for alert in alerts if alert["kind"] == "provider_not_executing"] == []


class ListingThrottledThenSlow(NoRefundsHere, NoSubscriptionsHere):
    """Listings of the payment's refunds answered, one by one: 429, then three slow timeouts, then 429 again, then
    none of ours."""

    name = "stripe"

    def __init__(self) -> None:
        self.lists = 0

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        self.lists += 1
        if self.lists in (1, 5):
            raise ProviderNotExecuted("rate_limit: too many requests")
        if self.lists in (2, 3, 4):
            await asyncio.sleep(0.5)
            raise ProviderUnavailable("read timeout")
        return []


async def test_a_throttled_lookup_broken_by_lookups_that_got_no_answer_is_not_told_as_one_long_deferral(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """As for calls: a lookup that got no answer ends a run of deferrals, so a 429 after 1.5 s of timeouts does not
    alert that the provider kept deferring the refund since the first (its threshold here 1 s)."""
    provider = ListingThrottledThenSlow()
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        provider=provider,
        provider_not_executed_alert_after_seconds=1.0,
        sync_interval_seconds=3600.0,  # only the refund's lookups list
    ) as processor:
        approved = approval(payment_intent())
        recorded = await processor.publish(
            PaymentDisputed(payment_id=approved.payment_id, merchant_id=approved.merchant_id, dispute_id="dp_1")
        )

        async def dispute_read() -> bool:
            return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", recorded.id))

        await eventually(dispute_read, timeout=30)
        await processor.publish(approved)

        async def failed() -> bool:
            return await processor.refund_status(approved.refund_id) == "failed"

        await eventually(failed, timeout=60)
        assert provider.lists == 6
        alerts = await processor.staged("team_alert.raised", about=approved.payment_id)
        assert [alert["kind"] for alert in alerts] == ["refund_outcome_unknown"]
