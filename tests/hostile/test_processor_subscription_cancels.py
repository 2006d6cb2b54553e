"""Subscription cancels are as durable as refunds (security review, finding 11): a provider hiccup is retried for
as long as it lasts, a definite refusal alerts the team, and nothing goes to a dead-letter topic."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from refundflow_shared.events import SubscriptionCancelRequested, dlq_topic, topic_for
from tests.conftest import create_database
from tests.support.kafka_reader import read_topic
from tests.support.probe_service import eventually
from tests.support.processor_harness import PATIENT_CLIENT, ProcessorUnderTest, running_processor

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
    )


async def nothing_dead_lettered(processor: ProcessorUnderTest) -> None:
    topic = topic_for("subscription.cancel_requested", processor.settings.topic_prefix)
    assert await read_topic(processor.settings.kafka_bootstrap_servers, dlq_topic(topic), expected=0) == []


async def test_a_cancel_the_provider_keeps_failing_is_retried_until_it_is_done(processor: ProcessorUnderTest) -> None:
    requested = cancel_request(f"sub_flaky_{uuid.uuid4().hex[:12]}")
    await processor.publish(requested)

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
    await processor.publish(requested)

    async def alerted() -> bool:
        return bool(await processor.staged("team_alert.raised", about=requested.payment_id))

    await eventually(alerted, timeout=30)
    [alert] = await processor.staged("team_alert.raised", about=requested.payment_id)
    assert alert["kind"] == "subscription_cancel_failed"
    assert alert["details"]["subscription_id"] == requested.subscription_id
    assert await processor.staged("subscription.canceled", about=requested.subscription_id) == []
    await nothing_dead_lettered(processor)


async def test_a_cancel_at_period_end_after_a_cancel_now_is_done_not_a_false_alarm(
    processor: ProcessorUnderTest,
) -> None:
    """Two requests on one subscription (a cancel now, then one at the period's end): the provider refuses to
    schedule the end of a subscription already ended. That is the request done, not "the customer may still be
    billed"."""
    now = cancel_request(f"sub_twice_{uuid.uuid4().hex[:12]}")
    await processor.publish(now)

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
