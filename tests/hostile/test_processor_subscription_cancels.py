"""Subscription cancels are as durable as refunds (security review, finding 11): a provider hiccup is retried for
as long as it lasts, a definite refusal alerts the team, and nothing goes to a dead-letter topic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from refundflow_processor.payment_provider import (
    ProviderRefused,
    ProviderSubscription,
    ProviderUnavailable,
)
from refundflow_processor.subscription_ownership import PAYMENT_NEVER_CAME
from refundflow_shared.events import SubscriptionCancelRequested, SubscriptionExtensionGranted, dlq_topic, topic_for
from tests.conftest import create_database
from tests.support.kafka_reader import read_topic
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    ProcessorUnderTest,
    publish_with_its_payment,
    running_processor,
    subscription_paid,
)
from tests.support.subscription_providers import NoRefundsHere

pytestmark = pytest.mark.asyncio(loop_scope="session")
REFUND_ID = "ref_with_cancel"


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    # The provider fails each cancel of a sub_flaky_ subscription more often than a consumer retries in place.
    # The tests count the provider's 500s: a slow answer must not count as one more failure.
    async with running_processor(
        await create_database(postgres_url),
        kafka_bootstrap,
        "tcancel.",
        sandbox={"flaky_failures": 8},
        **PATIENT_CLIENT,
    ) as running:
        yield running


def cancel_request(subscription_id: str) -> SubscriptionCancelRequested:
    return SubscriptionCancelRequested(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id="mer_cancel",
        subscription_id=subscription_id,
        at_period_end=False,
        refund_id=REFUND_ID,
        requested_by="api_key:key_test",
        customer_email="ada@example.com",
        merchant_name="Acme Software",
        note_to_customer="We cannot refund a period already used.",
    )


async def nothing_dead_lettered(processor: ProcessorUnderTest) -> None:
    topic = topic_for("subscription.cancel_requested", processor.settings.topic_prefix)
    assert await read_topic(processor.settings.kafka_bootstrap_servers, dlq_topic(topic), expected=0) == []


async def cancel_state(processor: ProcessorUnderTest, cancel: SubscriptionCancelRequested) -> str | None:
    state: str | None = await processor.db.fetchval(
        "SELECT state FROM subscription_cancels WHERE payment_id = $1 AND subscription_id = $2",
        cancel.payment_id,
        cancel.subscription_id,
    )
    return state


async def refused_before_any_call(processor: ProcessorUnderTest, cancel: SubscriptionCancelRequested) -> str:
    """The cancel was refused, the team alerted and intake told: the reason told."""

    async def told() -> bool:
        failed = await processor.staged("subscription.cancel_failed", about=cancel.payment_id)
        return any(f["subscription_id"] == cancel.subscription_id for f in failed)

    await eventually(told, timeout=30)
    [failed] = [
        f
        for f in await processor.staged("subscription.cancel_failed", about=cancel.payment_id)
        if f["subscription_id"] == cancel.subscription_id
    ]
    alerts = await processor.staged("team_alert.raised", about=cancel.payment_id)
    assert "subscription_request_mismatch" in [a["kind"] for a in alerts]
    assert await cancel_state(processor, cancel) == "failed"
    assert failed["customer_email"] is None, "the customer is told of the provider's refusals only"
    reason: str = failed["reason"]
    return reason


async def test_a_cancel_or_an_extension_of_a_subscription_not_its_payments_is_refused_before_any_call(
    processor: ProcessorUnderTest,
) -> None:
    """Every cancel and extension a message named was made, whatever its payment and merchant: another merchant's
    message could end or extend a victim's subscription. Now each must name the subscription billing said its
    payment is of, for that payment's merchant."""
    victim = cancel_request(f"sub_victim_{uuid.uuid4().hex[:12]}").model_copy(update={"merchant_id": "mer_victim"})
    await processor.publish(subscription_paid(victim.merchant_id, victim.payment_id, victim.subscription_id))
    through_the_victims_payment = victim.model_copy(update={"merchant_id": "mer_attacker"})
    own_payment = victim.model_copy(
        update={"merchant_id": "mer_attacker", "payment_id": f"pay_{uuid.uuid4().hex[:10]}"}
    )
    await processor.publish(subscription_paid("mer_attacker", own_payment.payment_id, f"sub_{uuid.uuid4().hex[:12]}"))
    extension = SubscriptionExtensionGranted(
        payment_id=own_payment.payment_id,
        merchant_id="mer_attacker",
        subscription_id=victim.subscription_id,
        days=30,
        granted_by="api_key:key_test",
    )
    for request in (through_the_victims_payment, own_payment, extension):
        await processor.publish(request)

    for refused in (through_the_victims_payment, own_payment):
        reason = await refused_before_any_call(processor, refused)
        assert reason == (
            f"subscription {victim.subscription_id} is not the subscription of payment {refused.payment_id}"
            " of this merchant"
        )

    async def extension_refused() -> bool:
        found = await processor.db.fetchval(
            "SELECT state FROM subscription_extensions WHERE payment_id = $1", own_payment.payment_id
        )
        return bool(found == "failed")

    await eventually(extension_refused, timeout=30)
    assert await processor.staged("subscription.canceled", about=victim.subscription_id) == []
    assert await processor.staged("subscription.extended", about=victim.subscription_id) == []
    await nothing_dead_lettered(processor)


async def test_a_cancel_read_before_its_payment_waits_for_it(processor: ProcessorUnderTest) -> None:
    """The cancel and its payment's payment.succeeded travel on different topics: read first, it waits."""
    requested = cancel_request(f"sub_{uuid.uuid4().hex[:12]}")
    await processor.publish(requested)

    async def waiting() -> bool:
        return await cancel_state(processor, requested) == "awaiting_payment"

    await eventually(waiting, timeout=30)
    await processor.publish(subscription_paid(requested.merchant_id, requested.payment_id, requested.subscription_id))

    async def canceled() -> bool:
        return bool(await processor.staged("subscription.canceled", about=requested.subscription_id))

    await eventually(canceled, timeout=30)
    await nothing_dead_lettered(processor)


async def test_a_cancel_whose_payment_never_comes_is_refused_after_the_wait(processor: ProcessorUnderTest) -> None:
    requested = cancel_request(f"sub_{uuid.uuid4().hex[:12]}")
    await processor.publish(requested)

    async def waiting() -> bool:
        return await cancel_state(processor, requested) == "awaiting_payment"

    await eventually(waiting, timeout=30)
    await processor.db.execute(  # as if it had waited 10 minutes
        "UPDATE subscription_cancels SET created_at = created_at - interval '10 minutes' WHERE payment_id = $1",
        requested.payment_id,
    )
    await processor.db.execute("SELECT pg_notify('processor_subscription_cancels', '')")

    assert await refused_before_any_call(processor, requested) == PAYMENT_NEVER_CAME
    await nothing_dead_lettered(processor)


async def test_a_cancel_the_provider_keeps_failing_is_retried_until_it_is_done(processor: ProcessorUnderTest) -> None:
    requested = cancel_request(f"sub_flaky_{uuid.uuid4().hex[:12]}")
    await publish_with_its_payment(processor, requested)

    async def canceled() -> bool:
        return bool(await processor.staged("subscription.canceled", about=requested.subscription_id))

    await eventually(canceled, timeout=60)
    [done] = await processor.staged("subscription.canceled", about=requested.subscription_id)
    assert (done["refund_id"], done["at_period_end"]) == (REFUND_ID, False)
    tries = await processor.db.fetchval(
        "SELECT tries FROM subscription_cancels WHERE subscription_id = $1", requested.subscription_id
    )
    assert tries == 8, "each 500 was retried from the durable schedule"
    await nothing_dead_lettered(processor)


async def test_a_cancel_the_provider_refuses_alerts_the_merchants_team(processor: ProcessorUnderTest) -> None:
    requested = cancel_request(f"sub_missing_{uuid.uuid4().hex[:12]}")
    await publish_with_its_payment(processor, requested)

    async def alerted() -> bool:
        return bool(await processor.staged("team_alert.raised", about=requested.payment_id))

    await eventually(alerted, timeout=30)
    [alert] = await processor.staged("team_alert.raised", about=requested.payment_id)
    assert alert["kind"] == "subscription_cancel_failed"
    assert alert["details"]["subscription_id"] == requested.subscription_id
    assert await processor.staged("subscription.canceled", about=requested.subscription_id) == []
    await nothing_dead_lettered(processor)


async def test_a_cancel_the_provider_refuses_is_told_to_intake_to_be_asked_again(
    processor: ProcessorUnderTest,
) -> None:
    """Intake was never told: it counted the cancel as asked, so asking it again asked the provider nothing and
    the customer went on being billed. The refusal is published with the failed record, in its transaction, with
    what the request said to the customer (the notifier tells them: they heard nothing of the refusal)."""
    requested = cancel_request(f"sub_missing_{uuid.uuid4().hex[:12]}").model_copy(
        update={"at_period_end": True, "no_refund": True}
    )
    await publish_with_its_payment(processor, requested)

    async def told() -> bool:
        return bool(await processor.staged("subscription.cancel_failed", about=requested.subscription_id))

    await eventually(told, timeout=30)
    [failed] = await processor.staged("subscription.cancel_failed", about=requested.subscription_id)
    assert (failed["payment_id"], failed["merchant_id"], failed["refund_id"], failed["at_period_end"]) == (
        requested.payment_id,
        requested.merchant_id,
        REFUND_ID,
        True,
    )
    error = await processor.db.fetchval(
        "SELECT last_error FROM subscription_cancels WHERE subscription_id = $1", requested.subscription_id
    )
    assert failed["reason"] and failed["reason"] == error
    carried = {name: failed[name] for name in ("customer_email", "merchant_name", "note_to_customer", "no_refund")}
    assert carried == {
        "customer_email": "ada@example.com",
        "merchant_name": "Acme Software",
        "note_to_customer": "We cannot refund a period already used.",
        "no_refund": True,
    }, "what the request said to the customer, who is told"
    assert await processor.staged("subscription.canceled", about=requested.subscription_id) == []
    await nothing_dead_lettered(processor)


async def test_a_cancel_at_period_end_after_a_cancel_now_is_done_not_a_false_alarm(
    processor: ProcessorUnderTest,
) -> None:
    """Two requests on one subscription (a cancel now, then one at the period's end): the provider refuses to
    schedule the end of a subscription already ended. That is the request done, not "the customer may still be
    billed"."""
    now = cancel_request(f"sub_twice_{uuid.uuid4().hex[:12]}")
    await publish_with_its_payment(processor, now)

    async def canceled(count: int) -> bool:
        return len(await processor.staged("subscription.canceled", about=now.subscription_id)) >= count

    await eventually(lambda: canceled(1), timeout=30)
    at_period_end = now.model_copy(update={"at_period_end": True, "refund_id": "ref_second_request"})
    await processor.publish(at_period_end)

    await eventually(lambda: canceled(2), timeout=30)
    second = (await processor.staged("subscription.canceled", about=now.subscription_id))[1]
    assert (second["refund_id"], second["at_period_end"]) == ("ref_second_request", False), "it ended already"
    alerts = await processor.staged("team_alert.raised", about=now.payment_id)
    assert [a for a in alerts if a["kind"] == "subscription_cancel_failed"] == []
    await nothing_dead_lettered(processor)


async def test_a_cancel_only_of_a_subscription_already_ended_says_so_and_that_no_refund_was_made(
    processor: ProcessorUnderTest,
) -> None:
    """The cancellation is the customer's only email of a cancel-only decision: it carries the decision's no refund,
    and says the subscription had ended (when), not that it was cancelled now."""
    now = cancel_request(f"sub_ended_{uuid.uuid4().hex[:12]}")
    await publish_with_its_payment(processor, now)

    async def canceled(count: int) -> bool:
        return len(await processor.staged("subscription.canceled", about=now.subscription_id)) >= count

    await eventually(lambda: canceled(1), timeout=30)
    cancel_only = now.model_copy(update={"at_period_end": True, "refund_id": "ref_cancel_only", "no_refund": True})
    await processor.publish(cancel_only)

    await eventually(lambda: canceled(2), timeout=30)
    first, second = await processor.staged("subscription.canceled", about=now.subscription_id)
    assert (first["no_refund"], first["already_ended"]) == (False, False)
    assert (second["at_period_end"], second["no_refund"], second["already_ended"]) == (False, True, True)
    assert second["ends_at"] == first["ends_at"], "it ended when the first request cancelled it"


async def test_a_second_cancel_now_of_a_subscription_is_done_not_a_false_alarm(processor: ProcessorUnderTest) -> None:
    """The provider refuses to cancel a canceled subscription (Stripe's 404, as the sandbox answers): the second
    request finds it ended, and is done."""
    first = cancel_request(f"sub_twice_now_{uuid.uuid4().hex[:12]}")
    await publish_with_its_payment(processor, first)

    async def canceled(count: int) -> bool:
        return len(await processor.staged("subscription.canceled", about=first.subscription_id)) >= count

    await eventually(lambda: canceled(1), timeout=30)
    await processor.publish(first.model_copy(update={"refund_id": "ref_second_request"}))

    await eventually(lambda: canceled(2), timeout=30)
    done = await processor.staged("subscription.canceled", about=first.subscription_id)
    assert [(d["refund_id"], d["at_period_end"]) for d in done] == [(REFUND_ID, False), ("ref_second_request", False)]
    assert done[1]["ends_at"] == done[0]["ends_at"], "it ended when the first request cancelled it"
    alerts = await processor.staged("team_alert.raised", about=first.payment_id)
    assert [a for a in alerts if a["kind"] == "subscription_cancel_failed"] == []
    await nothing_dead_lettered(processor)


class CanceledInABrownOut(NoRefundsHere):
    """Stripe after a cancel now that timed out once it was applied: cancelling again is its 404 resource_missing
    (a canceled subscription is gone for cancels), and the first read of the subscription fails in the same
    brown-out; later reads show it canceled."""

    name = "stripe"

    def __init__(self) -> None:
        self.reads = 0
        self.canceled_at = datetime.now(UTC).replace(microsecond=0)

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderRefused("resource_missing", f"No such subscription: '{subscription_id}'")

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        self.reads += 1
        if self.reads == 1:
            raise ProviderUnavailable("HTTP 503: the provider is browning out", server_error=True)
        return ProviderSubscription(subscription_id, "canceled", False, self.canceled_at)

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        raise ProviderUnavailable("not in this test")


async def test_a_refused_cancel_whose_subscription_cannot_be_read_yet_is_retried_not_failed(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A refusal says nothing final while the read that would explain it got no answer: the cancel is tried again
    later, and then it is found done (the subscription had ended), with no "customer may still be billed"."""
    provider = CanceledInABrownOut()
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        requested = cancel_request(f"sub_{uuid.uuid4().hex[:12]}")
        await publish_with_its_payment(processor, requested)

        async def state() -> str | None:
            found: str | None = await processor.db.fetchval(
                "SELECT state FROM subscription_cancels WHERE subscription_id = $1", requested.subscription_id
            )
            return found

        async def finished() -> bool:
            return await state() in ("succeeded", "failed")

        await eventually(finished, timeout=30)
        assert await state() == "succeeded"
        assert provider.reads == 2, "the unanswered read was retried, and answered"
        [done] = await processor.staged("subscription.canceled", about=requested.subscription_id)
        assert done["at_period_end"] is False
        assert datetime.fromisoformat(done["ends_at"]) == provider.canceled_at
        assert await processor.staged("team_alert.raised", about=requested.payment_id) == []
        await nothing_dead_lettered(processor)


class SlowRefusalThenNoRead(CanceledInABrownOut):
    """A cancel refused after most of the call deadline, and a read of the subscription that never answers."""

    def __init__(self, refusal_after: float) -> None:
        super().__init__()
        self.refusal_after = refusal_after
        self.calls: list[tuple[float, float]] = []  # (started, ended) of each call, in order

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(self.refusal_after)
            raise ProviderRefused("resource_missing", f"No such subscription: '{subscription_id}'")
        finally:
            self.calls.append((started, asyncio.get_running_loop().time()))

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(3600)
            raise AssertionError("the deadline cuts the read short")
        finally:
            self.calls.append((started, asyncio.get_running_loop().time()))


async def test_a_refused_cancel_and_its_read_end_within_the_lease_of_one_call(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The lease outlives one call's deadline: the read after a refusal gets what is left of it, not a deadline of
    its own, or another instance takes the cancel over while the read still runs."""
    provider = SlowRefusalThenNoRead(refusal_after=1.5)  # of the harness's 2 s deadline (a 3 s lease)
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        assert processor.settings.provider_call_deadline_seconds < 2 * provider.refusal_after
        requested = cancel_request(f"sub_{uuid.uuid4().hex[:12]}")
        await publish_with_its_payment(processor, requested)

        async def tried() -> bool:
            tries: int | None = await processor.db.fetchval(
                "SELECT tries FROM subscription_cancels WHERE subscription_id = $1", requested.subscription_id
            )
            return bool(tries)

        await eventually(tried, timeout=30)
        (cancel_started, _), (_, read_ended) = provider.calls[:2]
        assert read_ended - cancel_started < processor.settings.executor_lease_seconds, "the lease ran out first"


class ExpiredBeforeItsFirstPayment(CanceledInABrownOut):
    """A subscription whose first payment never came: Stripe ended it (``incomplete_expired``) and refuses to cancel
    it; it can bill nothing."""

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        self.reads += 1
        return ProviderSubscription(subscription_id, "incomplete_expired", False, self.canceled_at)


async def test_a_refused_cancel_of_a_subscription_expired_unpaid_is_done_not_a_false_alarm(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """An expired subscription has ended as a canceled one has (the extensions count both as ended): its refused
    cancel is done, with no "customer may still be billed" alarm and no cancel_failed."""
    provider = ExpiredBeforeItsFirstPayment()
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        requested = cancel_request(f"sub_{uuid.uuid4().hex[:12]}")
        await publish_with_its_payment(processor, requested)

        async def canceled() -> bool:
            return bool(await processor.staged("subscription.canceled", about=requested.subscription_id))

        await eventually(canceled, timeout=30)
        [done] = await processor.staged("subscription.canceled", about=requested.subscription_id)
        assert done["at_period_end"] is False
        assert await processor.staged("team_alert.raised", about=requested.payment_id) == []
        assert await processor.staged("subscription.cancel_failed", about=requested.subscription_id) == []
