"""A refused API key is a configuration fault, not a refund failure (security review, finding 20)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from refundflow_processor.payment_provider import ProviderAuthFailed, ProviderRefund, ProviderSubscription
from refundflow_processor.stripe_provider import StripeProvider
from refundflow_shared.events import SubscriptionCancelRequested, SubscriptionExtensionGranted
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    STRIPE_KEY,
    ProcessorUnderTest,
    approval,
    payment_intent,
    publish_with_its_payment,
    running_processor,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def auth_alerts(processor: ProcessorUnderTest, merchant_id: str) -> list[dict[str, object]]:
    alerts = await processor.staged("team_alert.raised", about=merchant_id)
    return [a for a in alerts if a["kind"] == "provider_auth_failed"]


async def test_refunds_wait_while_the_key_is_refused_and_each_merchant_is_alerted_once_per_episode(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The test counts the refund's tries: a call timed out on a loaded machine must not count as one more.
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")  # the key was rolled at Stripe
        first = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_a"})
        second = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_b"})
        await processor.publish(first)
        await processor.publish(second)

        async def refused_several_times() -> bool:
            return int((await processor.sandbox("GET", f"api_keys/{STRIPE_KEY}"))["refused_requests"]) >= 6

        await eventually(refused_several_times, timeout=60)
        for approved in (first, second):
            assert await processor.refund_status(approved.refund_id) == "processing"
            assert await processor.attempts(approved.refund_id) == ["scheduled"]
            assert await processor.staged("refund.failed", about=approved.refund_id) == []
            assert len(await auth_alerts(processor, approved.merchant_id)) == 1
        tries = await processor.db.fetchval(
            "SELECT max(tries) FROM refund_attempts WHERE refund_id = $1", first.refund_id
        )
        assert tries == 0, "a refused key spends none of the refund's retry budget"

        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/restore")  # the new key is deployed
        for approved in (first, second):
            await eventually(partial(_status_is, processor, approved.refund_id, "succeeded"), timeout=30)
            assert len(await processor.provider_refunds(approved.provider_payment_id)) == 1
            assert len(await auth_alerts(processor, approved.merchant_id)) == 1

        # A new episode is alerted anew.
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")
        third = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_a"})
        await processor.publish(third)

        async def alerted_again() -> bool:
            return len(await auth_alerts(processor, third.merchant_id)) == 2

        await eventually(alerted_again, timeout=30)
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/restore")
        await eventually(lambda: _status_is(processor, third.refund_id, "succeeded"), timeout=30)


async def _status_is(processor: ProcessorUnderTest, refund_id: str, status: str) -> bool:
    return await processor.refund_status(refund_id) == status


async def test_a_new_process_alerts_a_new_episode_for_a_merchant_alerted_before_it_started(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")
        first = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_restart"})
        await processor.publish(first)
        await eventually(lambda: _alerted(processor, first.merchant_id, 1), timeout=60)

    # A new key is deployed: a new process (and a sandbox whose key works), which was never refused itself.
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        second = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_restart"})
        await processor.publish(second)
        await eventually(partial(_status_is, processor, second.refund_id, "succeeded"), timeout=60)

        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")  # the key is refused again: a new episode
        third = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_restart"})
        await processor.publish(third)
        await eventually(lambda: _alerted(processor, third.merchant_id, 2), timeout=60)


class SubscriptionsRefused:
    """A restricted key: refunds work (the sandbox), subscriptions are refused (403, as Stripe answers an rk_ key
    without the subscriptions permission)."""

    name = "stripe"

    def __init__(self) -> None:
        self.sandbox: StripeProvider | None = None  # known once the harness started it, before any refund

    async def _refunds(self) -> StripeProvider:
        assert self.sandbox is not None
        return self.sandbox

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        return await (await self._refunds()).create_refund(
            payment_ref=payment_ref,
            amount=amount,
            currency=currency,
            idempotency_key=idempotency_key,
            refund_id=refund_id,
        )

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        return await (await self._refunds()).get_refund(provider_refund_id)

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return await (await self._refunds()).list_refunds(payment_ref)

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderAuthFailed("HTTP 403: permission_error (the key may not write subscriptions)")

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        raise ProviderAuthFailed("HTTP 403: permission_error (the key may not read subscriptions)")

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        raise ProviderAuthFailed("HTTP 403: permission_error (the key may not write subscriptions)")


def cancel_refused_by_the_key(merchant_id: str) -> SubscriptionCancelRequested:
    return SubscriptionCancelRequested(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id=merchant_id,
        subscription_id=f"sub_{uuid.uuid4().hex[:10]}",
        at_period_end=False,
        requested_by="api_key:key_test",
    )


async def test_refunds_that_succeed_do_not_end_an_episode_of_refused_subscription_calls(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = SubscriptionsRefused()
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, provider=provider, **PATIENT_CLIENT
    ) as processor:
        provider.sandbox = StripeProvider(STRIPE_KEY, processor.sandbox_url, 15.0)
        cancel = cancel_refused_by_the_key("mer_auth_subscriptions")
        await publish_with_its_payment(processor, cancel)
        await eventually(lambda: _alerted(processor, cancel.merchant_id, 1), timeout=30)
        for _ in range(4):  # another merchant's refunds succeed between the cancel's tries, paused a second each
            refund = approval(payment_intent())
            await processor.publish(refund)
            await eventually(partial(_status_is, processor, refund.refund_id, "succeeded"), timeout=30)
            await asyncio.sleep(1.0)
        assert len(await auth_alerts(processor, cancel.merchant_id)) == 1, "one episode, one alert"


async def test_refused_subscription_calls_do_not_pause_refunds(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = SubscriptionsRefused()
    long_pause = {"provider_auth_pause_seconds": 60.0, "provider_auth_pause_max_seconds": 60.0}
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, provider=provider, **(PATIENT_CLIENT | long_pause)
    ) as processor:
        provider.sandbox = StripeProvider(STRIPE_KEY, processor.sandbox_url, 15.0)
        cancel = cancel_refused_by_the_key("mer_auth_pause")
        await publish_with_its_payment(processor, cancel)
        await eventually(lambda: _alerted(processor, cancel.merchant_id, 1), timeout=30)

        refund = approval(payment_intent())  # the key may refund: nothing waits for the subscriptions' pause
        await processor.publish(refund)
        await eventually(partial(_status_is, processor, refund.refund_id, "succeeded"), timeout=30)


async def _alerted(processor: ProcessorUnderTest, merchant_id: str, times: int) -> bool:
    return len(await auth_alerts(processor, merchant_id)) == times


class RenewsWhileTheWriteIsRefused:
    """A key that may read subscriptions but not write them (restricted, 403 on the change) until the merchant fixes
    it; meanwhile the period ends and the customer pays the next one."""

    name = "stripe"

    def __init__(self) -> None:
        self.period_end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        self.writes: list[tuple[datetime, str]] = []

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        return ProviderSubscription(subscription_id, "active", False, None, self.period_end, {})

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        self.writes.append((until, idempotency_key))
        if len(self.writes) == 1:
            self.period_end += timedelta(days=30)  # renewed, paid
            raise ProviderAuthFailed("HTTP 403: permission_error (the key may not write subscriptions)")
        self.period_end = until
        return ProviderSubscription(subscription_id, "trialing", False, None, until, metadata)

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderAuthFailed("HTTP 403: not in this test")

    async def create_refund(self, **kw: object) -> ProviderRefund:
        raise ProviderAuthFailed("HTTP 403: not in this test")

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        raise ProviderAuthFailed("HTTP 403: not in this test")

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return []


async def test_an_extension_held_up_past_a_renewal_extends_the_period_the_customer_paid(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The new period end was fixed from the period then running; the change waited (refused by the key) while the
    subscription renewed. It extends the renewed period: moving the end to the old one + the days would take back
    most of a period the customer paid for."""
    provider = RenewsWhileTheWriteIsRefused()
    first_end = provider.period_end
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        granted = SubscriptionExtensionGranted(
            payment_id=f"pay_{uuid.uuid4().hex[:10]}",
            merchant_id="mer_auth_renewal",
            subscription_id=f"sub_{uuid.uuid4().hex[:12]}",
            days=7,
            refund_id=f"ref_{uuid.uuid4().hex[:8]}",
            granted_by="user:usr_1",
        )
        await publish_with_its_payment(processor, granted)

        async def announced() -> bool:
            return bool(await processor.staged("subscription.extended", about=granted.subscription_id))

        await eventually(announced, timeout=60)
        [extended] = await processor.staged("subscription.extended", about=granted.subscription_id)
        renewed_end = first_end + timedelta(days=30)
        [(refused_until, refused_key), (made_until, made_key)] = provider.writes
        assert (refused_until, made_until) == (first_end + timedelta(days=7), renewed_end + timedelta(days=7))
        assert made_key != refused_key, "a change with another body goes under another idempotency key"
        assert datetime.fromisoformat(extended["current_period_end"]) == renewed_end + timedelta(days=7)
