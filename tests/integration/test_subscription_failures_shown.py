"""What the provider did, or refused to do, to a subscription is seen by the merchant: on the request's timeline,
in the payment's subscription state (API and dashboard), and as webhooks they may subscribe to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from refundflow_shared.events import (
    Event,
    EventData,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
    SubscriptionExtensionFailed,
)
from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def _from_the_processor(intake: IntakeUnderTest, data: EventData) -> None:
    sent: Event = await intake.publish(data, source="refundflow/processor")

    async def handled() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", sent.id))

    await eventually(handled, timeout=30)


async def _state(intake: IntakeUnderTest, merchant: Headers, payment_id: str) -> dict[str, Any]:
    shown = await intake.client.get(f"/v1/payments/{payment_id}", headers=merchant)
    assert shown.status_code == 200, shown.text
    state: dict[str, Any] = shown.json()["subscription_state"]
    return state


async def _extension_granted(intake: IntakeUnderTest, merchant: Headers, payment: dict[str, Any]) -> str:
    refund = await intake.refund(merchant, payment["id"], amount=500)
    approved = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"subscription_action": "refund_only", "extend_days": 7},
    )
    assert approved.status_code == 200, approved.text
    refund_id: str = refund["id"]
    return refund_id


async def test_a_refused_extension_is_on_the_requests_timeline_and_the_payment_no_longer_expects_it(
    intake: IntakeUnderTest,
) -> None:
    """A refused extension only alerted the team: the request and the payment went on saying nothing of it."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    refund_id = await _extension_granted(intake, merchant, payment)
    assert (await _state(intake, merchant, payment["id"]))["extension_pending_days"] == 7

    await _from_the_processor(
        intake,
        SubscriptionExtensionFailed(
            payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
            subscription_id=payment["subscription"]["id"], days=7, refund_id=refund_id,
            reason="the subscription is canceled: there is no period",
        ),
    )  # fmt: skip

    refund = (await intake.client.get(f"/v1/refunds/{refund_id}", headers=merchant)).json()
    failed = refund["timeline"][-1]
    assert (failed["action"], failed["actor"]) == ("subscription_extension_failed", "refundflow/processor")
    assert "not extended by 7 days" in failed["note"] and "there is no period" in failed["note"]
    state = await _state(intake, merchant, payment["id"])
    assert state["extension_pending_days"] is None
    assert state["extension_failure"] == "the subscription is canceled: there is no period"
    assert state["extension_failed_at"] is not None and state["extended_to"] is None
    page = (await owner.page(f"/dashboard/refunds/{refund_id}")).text
    assert "Subscription extension refused by the provider" in page
    payment_page = (await owner.page(f"/dashboard/payments/{payment['id']}")).text
    assert "A goodwill extension was refused by the provider" in payment_page


async def test_an_extension_made_is_no_longer_expected_and_shows_the_new_period_end(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund_id = await _extension_granted(intake, merchant, payment)
    new_end = datetime.fromisoformat(payment["subscription"]["current_period_end"]) + timedelta(days=7)

    await _from_the_processor(
        intake,
        SubscriptionExtended(
            payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
            subscription_id=payment["subscription"]["id"], days=7, current_period_end=new_end, refund_id=refund_id,
        ),
    )  # fmt: skip

    state = await _state(intake, merchant, payment["id"])
    assert state["extension_pending_days"] is None
    assert datetime.fromisoformat(state["extended_to"]) == new_end


async def test_a_payment_shows_its_subscriptions_cancel_asked_refused_and_done(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    assert await _state(intake, merchant, payment["id"]) == {
        "cancel_requested_at": None,
        "cancel_at_period_end_requested_at": None,
        "cancel_failed_at": None,
        "cancel_failure": None,
        "canceled_at": None,
        "access_until": None,
        "extended_to": None,
        "extension_pending_days": None,
        "extension_failed_at": None,
        "extension_failure": None,
    }
    one_time = await intake.payment(merchant)
    assert (await intake.client.get(f"/v1/payments/{one_time['id']}", headers=merchant)).json()[
        "subscription_state"
    ] is None

    cancel = f"/v1/payments/{payment['id']}/subscription/cancel"
    asked = await intake.client.post(cancel, headers=merchant, json={"at_period_end": True})
    assert asked.status_code == 202, asked.text
    assert asked.json()["subscription_state"]["cancel_at_period_end_requested_at"] is not None

    merchant_id, subscription_id = await intake.merchant_id(merchant), payment["subscription"]["id"]
    await _from_the_processor(
        intake,
        SubscriptionCancelFailed(
            payment_id=payment["id"], merchant_id=merchant_id, subscription_id=subscription_id, at_period_end=True,
            reason="Refused (resource_missing): No such subscription",
        ),
    )  # fmt: skip
    refused = await _state(intake, merchant, payment["id"])
    assert refused["cancel_at_period_end_requested_at"] is None
    assert refused["cancel_failure"] == "Refused (resource_missing): No such subscription"
    assert refused["cancel_failed_at"] is not None

    again = await intake.client.post(cancel, headers=merchant, json={"at_period_end": True})
    assert again.json()["subscription_state"]["cancel_failure"] is None, "asked again: the refusal is behind it"
    ends_at = datetime.fromisoformat(payment["subscription"]["current_period_end"])
    await _from_the_processor(
        intake,
        SubscriptionCanceled(
            payment_id=payment["id"], merchant_id=merchant_id, subscription_id=subscription_id, at_period_end=True,
            ends_at=ends_at,
        ),
    )  # fmt: skip
    done = await _state(intake, merchant, payment["id"])
    assert done["canceled_at"] is not None and datetime.fromisoformat(done["access_until"]) == ends_at


async def test_merchants_may_subscribe_to_refused_cancels_and_extensions(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    events = ["subscription.cancel_failed", "subscription.extension_failed"]
    created = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={"url": "http://127.0.0.1:9/rf", "events": events}
    )
    assert created.status_code == 201, created.text
    webhooks = (await intake.client.get("/openapi.json")).json()["webhooks"]
    assert set(events) <= set(webhooks)
