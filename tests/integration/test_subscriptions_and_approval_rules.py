"""Subscription actions on approval, goodwill extensions, auto-approval and the second approver."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from refundflow_intake import refund_decisions, subscription_outcomes
from refundflow_shared.events import (
    Event,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
    SubscriptionExtensionFailed,
)
from tests.support.dashboard_people import Person, csrf_of, invite, merchant_with_owner
from tests.support.intake_harness import ADMIN, Headers, IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_approving_a_subscription_refund_cancels_it_now_by_default(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"], reason="unexpected_renewal")

    approved = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()

    assert (approved["status"], approved["subscription_action"]) == ("processing", "refund_and_cancel")
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["subscription_id"], c["at_period_end"], c["refund_id"]) for c in cancels] == [
        (payment["subscription"]["id"], False, refund["id"])
    ]


async def _auto_approve_duplicates_up_to(intake: IntakeUnderTest, merchant: Headers, amount: int) -> None:
    rule = {"max_amount": {"amount": amount, "currency": "EUR"}, "reasons": ["duplicate"]}
    saved = await intake.client.put("/v1/refund-policy", headers=merchant, json={"auto_approve": rule})
    assert saved.status_code == 200, saved.text


async def _customer_of(intake: IntakeUnderTest, merchant: Headers, payment_id: str) -> Headers:
    """The payment's customer, as their portal link makes them."""
    token = await intake.client.post(f"/v1/payments/{payment_id}/portal-token", headers=merchant, json={})
    assert token.status_code == 201, token.text
    return {"Authorization": f"Bearer {token.json()['token']}"}


async def _provider_cancelled(
    intake: IntakeUnderTest, merchant: Headers, payment: dict[str, Any], *, at_period_end: bool
) -> None:
    """The processor reports the subscription cancelled (now, or at its period's end); intake has recorded it."""
    ends_at = datetime.fromisoformat(payment["subscription"]["current_period_end"]) if at_period_end else None
    await intake.publish(
        SubscriptionCanceled(
            payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
            subscription_id=payment["subscription"]["id"], at_period_end=at_period_end, ends_at=ends_at,
        ),
        source="refundflow/processor",
    )  # fmt: skip
    recorded = "SELECT subscription_canceled_at IS NOT NULL FROM payments WHERE id = $1"
    await eventually(lambda: intake.db.fetchval(recorded, payment["id"]), timeout=30)


async def test_a_refund_still_cancels_now_a_subscription_set_to_end_at_its_period_end(
    intake: IntakeUnderTest,
) -> None:
    """A cancel at the period's end leaves the customer access they paid for; refunding that payment in full
    takes the access too, as the default always did."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, payment, at_period_end=True)
    refund = await intake.refund(merchant, payment["id"])

    approved = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()

    assert approved["subscription_action"] == "refund_and_cancel"
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["at_period_end"], c["refund_id"]) for c in cancels] == [(False, refund["id"])]


async def test_a_renewal_of_a_subscription_cancelled_already_is_only_refunded(intake: IntakeUnderTest) -> None:
    """The subscription ended through its second payment's refund: refunding its first payment too must not
    cancel it again (and tell the customer a second time)."""
    merchant = await intake.merchant()
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    await _provider_cancelled(intake, merchant, renewal, at_period_end=False)
    refund = await intake.refund(merchant, first["id"])

    approved = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()

    assert (approved["status"], approved["subscription_action"]) == ("processing", "refund_only")
    assert await intake.staged("subscription.cancel_requested", first["id"]) == []


async def test_a_second_refund_approved_before_the_cancel_is_done_does_not_cancel_again(
    intake: IntakeUnderTest,
) -> None:
    """The first approval asked the provider to cancel now; until the processor reports it done, a second approval
    of the same subscription asked again, and the customer heard of the cancellation twice."""
    merchant = await intake.merchant()
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    one, two = await intake.refund(merchant, first["id"], amount=1_000), await intake.refund(merchant, renewal["id"])

    first_approval = (await intake.client.post(f"/v1/refunds/{one['id']}/approve", headers=merchant)).json()
    second_approval = (await intake.client.post(f"/v1/refunds/{two['id']}/approve", headers=merchant)).json()

    assert first_approval["subscription_action"] == "refund_and_cancel"
    assert second_approval["subscription_action"] == "refund_only"
    assert len(await intake.staged("subscription.cancel_requested", first["id"])) == 1
    assert await intake.staged("subscription.cancel_requested", renewal["id"]) == []


async def test_approvals_on_two_payments_of_a_subscription_take_turns_without_deadlocking(
    intake: IntakeUnderTest,
) -> None:
    """A consumer batch approving refunds on the first payment then the renewal, against a person approving the
    renewal's: each locked its payment before the subscription, so the batch (first payment, subscription, waiting
    for the renewal) and the person (renewal, waiting for the subscription) deadlocked, one of them failing."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    one, two = await intake.refund(merchant, first["id"], amount=1_000), await intake.refund(merchant, renewal["id"])

    async def approve(conn: asyncpg.Connection, refund_id: str) -> None:
        await refund_decisions.approve_refund(conn, merchant_id, refund_id, actor="test", links=intake.links)

    outcome = await batch_and_person(
        intake,
        batch_first=lambda batch: approve(batch, one["id"]),
        person=lambda person: approve(person, two["id"]),
        batch_then=lambda batch: approve(batch, two["id"]),
    )
    assert not any(isinstance(o, asyncpg.DeadlockDetectedError) for o in outcome), outcome
    statuses = await intake.db.fetch("SELECT status FROM refunds WHERE id = ANY($1)", [one["id"], two["id"]])
    assert {r["status"] for r in statuses} == {"processing"}


@pytest.mark.parametrize("outcome", ["cancel_failed", "extension_failed", "extended"])
async def test_a_subscription_outcome_then_an_approval_in_one_batch_take_turns_with_a_person_without_deadlocking(
    intake: IntakeUnderTest, outcome: str
) -> None:
    """A consumer batch recording the provider's outcome on the first payment (a refused cancel or extension, or
    days added before the last period) locked that payment's row without its subscription's lock; a person
    approving the first payment's refund took the subscription's lock and waited for that row; the batch then
    approving the renewal's refund waited for the subscription's lock: a deadlock, one of them failing."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    one, two = await intake.refund(merchant, first["id"], amount=1_000), await intake.refund(merchant, renewal["id"])
    about = {"payment_id": first["id"], "merchant_id": merchant_id, "subscription_id": first["subscription"]["id"]}

    async def record_outcome(conn: asyncpg.Connection) -> None:
        actor = "refundflow/processor"
        if outcome == "cancel_failed":
            refused = SubscriptionCancelFailed(**about, at_period_end=False, reason="Refused (card_declined)")
            await subscription_outcomes.record_cancel_failed(conn, refused, actor=actor)
        elif outcome == "extension_failed":
            failed = SubscriptionExtensionFailed(**about, days=7, reason="Refused (card_declined)")
            await subscription_outcomes.record_extension_failed(conn, failed, actor=actor)
        else:
            period_end = datetime.fromisoformat(first["subscription"]["current_period_end"]) + timedelta(days=7)
            extended = SubscriptionExtended(**about, days=7, current_period_end=period_end)
            await subscription_outcomes.record_extended(conn, extended, actor=actor)

    async def approve(conn: asyncpg.Connection, refund_id: str) -> None:
        await refund_decisions.approve_refund(conn, merchant_id, refund_id, actor="test", links=intake.links)

    outcome_of_person = await batch_and_person(
        intake,
        batch_first=record_outcome,
        person=lambda person: approve(person, one["id"]),
        batch_then=lambda batch: approve(batch, two["id"]),
    )
    assert not any(isinstance(o, asyncpg.DeadlockDetectedError) for o in outcome_of_person), outcome_of_person
    statuses = await intake.db.fetch("SELECT status FROM refunds WHERE id = ANY($1)", [one["id"], two["id"]])
    assert {r["status"] for r in statuses} == {"processing"}


async def test_the_dashboard_offers_refund_only_first_when_the_subscription_has_ended(intake: IntakeUnderTest) -> None:
    """The approve form chose refund-and-cancel for every subscription: approved as shown, a renewal's refund
    cancelled an ended subscription again and told the customer a second time."""
    merchant, owner = await merchant_with_owner(intake)
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    running = await intake.refund(merchant, first["id"], amount=1_000)
    page = (await owner.page(f"/dashboard/refunds/{running['id']}")).text
    assert re.search(r'value="refund_and_cancel" checked', page), "a running subscription: refund and cancel"

    await _provider_cancelled(intake, merchant, renewal, at_period_end=False)
    page = (await owner.page(f"/dashboard/refunds/{running['id']}")).text

    assert re.search(r'value="refund_only" checked', page)
    assert not re.search(r'value="refund_and_cancel" checked', page)
    assert "The subscription has ended" in page


async def test_a_cancel_at_the_period_end_read_after_a_cancel_now_leaves_the_subscription_ended(
    intake: IntakeUnderTest,
) -> None:
    """Two payments of one subscription are two keys, read in either order: the period's end of a later-read
    schedule must not bring back what a cancel now ended (a refund would cancel it, and tell the customer, again)."""
    merchant = await intake.merchant()
    first = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
    merchant_id, period_end = await intake.merchant_id(merchant), first["subscription"]["current_period_end"]
    cancels = [
        SubscriptionCanceled(
            payment_id=payment["id"], merchant_id=merchant_id, subscription_id=first["subscription"]["id"],
            at_period_end=at_period_end, ends_at=datetime.fromisoformat(period_end) if at_period_end else None,
        )
        for payment, at_period_end in ((renewal, False), (first, True))
    ]  # fmt: skip
    for cancel in cancels:  # the cancel now first, the schedule after it
        sent = await intake.publish(cancel, source="refundflow/processor")

        async def handled(event_id: uuid.UUID = sent.id) -> bool:
            return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id))

        await eventually(handled, timeout=30)
    refund = await intake.refund(merchant, first["id"])

    approved = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()

    assert approved["subscription_action"] == "refund_only"
    assert await intake.staged("subscription.cancel_requested", first["id"]) == []


async def test_an_auto_approved_request_to_cancel_an_ended_subscription_only_refunds(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    await _auto_approve_duplicates_up_to(intake, merchant, 100_000)
    payment = await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, payment, at_period_end=False)
    customer = await _customer_of(intake, merchant, payment["id"])

    asked = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate", "cancel_subscription": True}
    )

    assert asked.status_code == 201, asked.text
    assert asked.json()["status"] == "processing"
    assert len(await intake.staged("refund.approved", payment["id"])) == 1
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


@pytest.mark.parametrize("action", ["refund_and_cancel", "cancel_only"])
async def test_a_cancel_decided_for_a_subscription_cancelled_already_asks_no_cancel_again(
    intake: IntakeUnderTest, action: str
) -> None:
    """The merchant chose to cancel a subscription that had ended already: asked again, the processor found it
    cancelled and announced it again, and the customer got a second "Your subscription is cancelled" email (the
    merchant a second webhook). The decision is made, the cancel not asked again, and the timeline says why."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, payment, at_period_end=False)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)

    response = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"subscription_action": action}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == ("processing" if action == "refund_and_cancel" else "rejected")
    assert len(await intake.staged("refund.approved", payment["id"])) == (action == "refund_and_cancel")
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []
    [skipped] = [t for t in body["timeline"] if t["action"] == "subscription_cancel_not_asked"]
    assert "cancelled already" in skipped["note"]


async def test_an_extension_of_a_subscription_set_to_end_moves_the_end_of_its_access(intake: IntakeUnderTest) -> None:
    """Cancelled at its period's end, then extended (refund only with goodwill days): access lasts until the new
    end, which the timeline says, not a next payment."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, payment, at_period_end=True)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    approved = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"subscription_action": "refund_only", "extend_days": 7},
    )
    assert approved.status_code == 200, approved.text
    new_end = datetime.fromisoformat(payment["subscription"]["current_period_end"]) + timedelta(days=7)
    extended = SubscriptionExtended(
        payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
        subscription_id=payment["subscription"]["id"], days=7, current_period_end=new_end,
        refund_id=refund["id"], last_period=True,  # as the processor read it: set to cancel at its period's end
    )  # fmt: skip
    await _handled(intake, await intake.publish(extended, source="refundflow/processor"))

    access = await intake.db.fetchval("SELECT subscription_access_until FROM payments WHERE id = $1", payment["id"])
    assert access == new_end
    shown = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    [entry] = [t for t in shown["timeline"] if t["action"] == "subscription_extended"]
    assert "access lasts until" in entry["note"]


async def test_refund_only_keeps_the_subscription(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    response = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"subscription_action": "refund_only"}
    )
    assert response.json()["status"] == "processing"
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []
    assert len(await intake.staged("refund.approved", payment["id"])) == 1


async def test_a_decision_that_keeps_a_subscription_its_customer_asked_to_cancel_says_so_to_them(
    intake: IntakeUnderTest,
) -> None:
    """The customer who asked to cancel, refunded only or refused, heard nothing of their subscription: they could
    believe it cancelled, and be billed at its renewal."""
    merchant = await intake.merchant()
    asked_cancel = {"reason": "duplicate", "cancel_subscription": True}
    kept, refused, cancelled, asked_keep = [await intake.subscription_payment(merchant) for _ in range(4)]
    decisions = [
        (kept, asked_cancel, "approve", {"subscription_action": "refund_only"}),
        (refused, asked_cancel, "reject", {"note": "Not a duplicate"}),
        (cancelled, asked_cancel, "approve", {}),
        (
            asked_keep,
            {"reason": "duplicate", "cancel_subscription": False},
            "approve",
            {"subscription_action": "refund_only"},
        ),
    ]
    for payment, ask, decide, body in decisions:
        customer = await _customer_of(intake, merchant, payment["id"])
        asked = await intake.client.post("/v1/portal/refund-requests", headers=customer, json=ask)
        assert asked.status_code == 201, asked.text
        decided = await intake.client.post(f"/v1/refunds/{asked.json()['id']}/{decide}", headers=merchant, json=body)
        assert decided.is_success, decided.text

    [kept_told] = await intake.staged("refund.approved", kept["id"])
    [refused_told] = await intake.staged("refund.rejected", refused["id"])
    [cancelled_told] = await intake.staged("refund.approved", cancelled["id"])
    [keep_told] = await intake.staged("refund.approved", asked_keep["id"])
    assert (kept_told["subscription_continues"], refused_told["subscription_continues"]) == (True, True)
    assert (cancelled_told["subscription_continues"], keep_told["subscription_continues"]) == (False, False)


async def test_cancel_only_moves_no_money_and_ends_the_subscription_at_the_period_end(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    response = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={
            "subscription_action": "cancel_only",
            "note": "Long-time customer, used it all month",
            "note_to_customer": "You keep access until the period ends.",
        },
    )
    body = response.json()
    assert (body["status"], body["subscription_action"]) == ("rejected", "cancel_only")
    assert (body["decision_note"], body["customer_note"]) == (
        "Long-time customer, used it all month",
        "You keep access until the period ends.",
    )
    assert body["timeline"][-1]["action"] == "cancel_only"
    assert await intake.staged("refund.approved", payment["id"]) == []
    # The team's note stays with the team: the customer hears the cancellation, with the note meant for them.
    assert [(e["note"], e["cancel_only"]) for e in await intake.staged("refund.rejected", payment["id"])] == [
        ("You keep access until the period ends.", True)
    ]
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["at_period_end"], c["note_to_customer"], c["customer_email"]) for c in cancels] == [
        (True, "You keep access until the period ends.", payment["customer_email"])
    ]
    assert cancels[0]["after_extension"] is False, "no extension to wait for"


async def test_cancel_only_with_goodwill_days_cancels_after_the_extension(intake: IntakeUnderTest) -> None:
    """The customer is told the access end: the processor cancels once the extension has moved it."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    response = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"subscription_action": "cancel_only", "extend_days": 7},
    )
    assert response.status_code == 200, response.text
    [granted] = await intake.staged("subscription.extension_granted", payment["id"])
    [cancel] = await intake.staged("subscription.cancel_requested", payment["id"])
    assert (cancel["at_period_end"], cancel["after_extension"]) == (True, True)
    assert cancel["refund_id"] == granted["refund_id"] == refund["id"]


async def test_a_cancel_only_decision_sent_twice_is_answered_as_the_first_and_made_once(
    intake: IntakeUnderTest,
) -> None:
    """A double click, or the form sent again after going back: the request closed as rejected, so the second was
    refused as a transition (409, "Your decision was not recorded") while approvals and rejections repeat as 200."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    by_key = await intake.refund(merchant, payment["id"], amount=1_000)
    body = {"subscription_action": "cancel_only", "extend_days": 7}

    answers = [
        await intake.client.post(f"/v1/refunds/{by_key['id']}/approve", headers=merchant, json=body) for _ in "12"
    ]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[1].json()["status"] == "rejected" and answers[1].json()["subscription_action"] == "cancel_only"
    another = await intake.client.post(
        f"/v1/refunds/{by_key['id']}/approve", headers=merchant, json={**body, "extend_days": 3}
    )
    assert another.status_code == 409 and another.json()["error"]["code"] == "invalid_status_transition"

    renewal = await intake.payment(merchant, product=payment["product"], subscription=payment["subscription"])
    by_person = await intake.refund(merchant, renewal["id"])
    page = f"/dashboard/refunds/{by_person['id']}"
    form = {"amount": "50.00", "subscription_action": "cancel_only", "note_to_customer": "Access ends then."}
    opened = csrf_of((await owner.page(page)).text)
    posted = [await owner.browser.post(f"{page}/approve", data={"csrf_token": opened, **form}) for _ in "12"]
    assert [p.status_code for p in posted] == [303, 303], posted[1].text[:500]
    # The first decision set the subscription to end: the renewal's asked no cancellation again, and says so.
    assert all(p.headers["location"].endswith("done=cancel_only_not_asked") for p in posted)
    assert len(await intake.staged("refund.rejected", payment["id"])) == 1
    assert len(await intake.staged("refund.rejected", renewal["id"])) == 1
    assert len(await intake.staged("subscription.cancel_requested", payment["id"])) == 1
    assert len(await intake.staged("subscription.extension_granted", payment["id"])) == 1


async def test_an_extension_goes_with_refund_only_or_cancel_only_never_with_a_cancel_now(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    refused = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"extend_days": 7})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "extension_conflicts_with_cancel"

    approved = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"subscription_action": "refund_only", "extend_days": 7},
    )
    assert approved.json()["status"] == "processing"
    [granted] = await intake.staged("subscription.extension_granted", payment["id"])
    assert (granted["days"], granted["refund_id"], granted["customer_email"]) == (
        7,
        refund["id"],
        payment["customer_email"],
    )
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


async def test_a_subscription_can_be_cancelled_without_any_refund(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    response = await intake.client.post(f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant)
    assert response.status_code == 202
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["at_period_end"], c["refund_id"]) for c in cancels] == [(True, None)]

    one_time = await intake.payment(merchant)
    refused = await intake.client.post(f"/v1/payments/{one_time['id']}/subscription/cancel", headers=merchant)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "not_a_subscription"


async def test_a_cancel_asked_again_is_answered_as_the_first_and_asked_of_the_provider_once(
    intake: IntakeUnderTest,
) -> None:
    """A retried call or a double click asked again, and the customer heard of the cancellation twice (and the
    merchant got two webhooks): a cancel already asked for, or for an ended subscription, is answered 202 as the
    first was and asks nothing; a cancel now after one at the period's end is another request."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    renewal = await intake.payment(merchant, product=payment["product"], subscription=payment["subscription"])
    cancel = f"/v1/payments/{payment['id']}/subscription/cancel"

    twice = await asyncio.gather(*(intake.client.post(cancel, headers=merchant) for _ in range(2)))
    again = await intake.client.post(f"/v1/payments/{renewal['id']}/subscription/cancel", headers=merchant)

    assert [r.status_code for r in (*twice, again)] == [202, 202, 202]
    assert twice[0].json() == twice[1].json()
    staged = "subscription.cancel_requested"
    assert [c["at_period_end"] for c in await intake.staged(staged, payment["id"])] == [True]
    assert await intake.staged(staged, renewal["id"]) == [], "the same subscription, through its renewal"

    now = {"at_period_end": False}
    for _ in range(2):
        response = await intake.client.post(cancel, headers=merchant, json=now)
        assert response.status_code == 202, response.text
    assert [c["at_period_end"] for c in await intake.staged(staged, payment["id"])] == [True, False]

    ended = await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, ended, at_period_end=False)
    for body in ({}, now):
        response = await intake.client.post(
            f"/v1/payments/{ended['id']}/subscription/cancel", headers=merchant, json=body
        )
        assert response.status_code == 202, response.text
    assert await intake.staged(staged, ended["id"]) == [], "it has ended: there is nothing to cancel"


async def _handled(intake: IntakeUnderTest, sent: Event) -> None:
    async def handled() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", sent.id))

    await eventually(handled, timeout=30)


async def _provider_refused_cancel(
    intake: IntakeUnderTest,
    merchant: Headers,
    payment: dict[str, Any],
    *,
    at_period_end: bool,
    refund_id: str | None = None,
) -> None:
    """The processor reports the provider refused to cancel the subscription; intake has handled it."""
    refused = SubscriptionCancelFailed(
        payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
        subscription_id=payment["subscription"]["id"], at_period_end=at_period_end, refund_id=refund_id,
        reason="Refused (resource_missing): No such subscription",
    )  # fmt: skip
    await _handled(intake, await intake.publish(refused, source="refundflow/processor"))


async def test_a_cancel_the_provider_refused_is_asked_of_it_again(intake: IntakeUnderTest) -> None:
    """A refused cancel counted as asked for ever: asking it again answered 202 and asked the provider nothing,
    and the customer went on being billed. A refusal forgets only the cancel it refused."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    cancel = f"/v1/payments/{payment['id']}/subscription/cancel"
    staged = "subscription.cancel_requested"

    async def asked(body: dict[str, Any]) -> list[bool]:
        response = await intake.client.post(cancel, headers=merchant, json=body)
        assert response.status_code == 202, response.text
        return [c["at_period_end"] for c in await intake.staged(staged, payment["id"])]

    assert await asked({}) == [True]
    await _provider_refused_cancel(intake, merchant, payment, at_period_end=True)
    assert await asked({}) == [True, True], "asked of the provider again"

    assert await asked({"at_period_end": False}) == [True, True, False]
    await _provider_refused_cancel(intake, merchant, payment, at_period_end=False)
    assert await asked({"at_period_end": False}) == [True, True, False, False]
    assert await asked({}) == [True, True, False, False], "the cancel at the period's end is still asked"


async def test_a_refund_whose_cancel_the_provider_refused_says_so_and_the_cancel_can_be_asked_again(
    intake: IntakeUnderTest,
) -> None:
    """A refund-and-cancel decision whose cancel the provider refused: the subscription read as ended for ever,
    so the cancel could not be asked again; the refund's timeline now says the cancel failed."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    approved = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()
    assert approved["subscription_action"] == "refund_and_cancel"

    await _provider_refused_cancel(intake, merchant, payment, at_period_end=False, refund_id=refund["id"])

    shown = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    failed = shown["timeline"][-1]
    assert (failed["action"], failed["actor"]) == ("subscription_cancel_failed", "refundflow/processor")
    assert "No such subscription" in failed["note"]
    page = (await owner.page(f"/dashboard/refunds/{refund['id']}")).text
    assert "Subscription cancel refused by the provider" in page
    response = await intake.client.post(
        f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant, json={"at_period_end": False}
    )
    assert response.status_code == 202, response.text
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["at_period_end"], c["refund_id"]) for c in cancels] == [(False, refund["id"]), (False, None)]


async def test_a_cancel_only_whose_cancel_the_provider_refused_does_not_tell_the_customer_it_is_cancelled(
    intake: IntakeUnderTest,
) -> None:
    """The portal said "Subscription cancelled ... will not be charged again" from the decision alone, while the
    provider had refused the cancel and the customer could be billed: it says the merchant is arranging it."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    customer = await _customer_of(intake, merchant, payment["id"])
    submitted = await intake.client.post(
        "/v1/portal/refund-requests",
        headers=customer,
        json={"reason": "unexpected_renewal", "amount": 1_000, "cancel_subscription": True},
    )
    assert submitted.status_code == 201, submitted.text
    refund = submitted.json()
    decided = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"subscription_action": "cancel_only"}
    )
    assert decided.status_code == 200, decided.text
    token = customer["Authorization"].removeprefix("Bearer ")
    status_url = f"/portal/{token}/requests/{refund['id']}/status"
    assert "will not be charged again" in (await intake.client.get(status_url)).text

    await _provider_refused_cancel(intake, merchant, payment, at_period_end=True, refund_id=refund["id"])

    tracked = (await intake.client.get(status_url)).text
    assert "will not be charged again" not in tracked
    assert "Subscription cancelled" not in tracked
    assert "arranging the cancellation" in tracked


async def test_a_subscription_renewed_after_a_cancel_at_its_period_end_can_be_cancelled_again(
    intake: IntakeUnderTest,
) -> None:
    """The merchant took a cancel at the period's end back at the provider, and the subscription renewed: the old
    cancel counted as asked for ever (and, once its period was over, as the subscription's end)."""
    merchant = await intake.merchant()
    first = await intake.subscription_payment(merchant, period_days=3)  # its period ends now
    cancel = await intake.client.post(f"/v1/payments/{first['id']}/subscription/cancel", headers=merchant)
    assert cancel.status_code == 202, cancel.text
    await _provider_cancelled(intake, merchant, first, at_period_end=True)
    period_end = datetime.fromisoformat(first["subscription"]["current_period_end"])
    renewed = {"id": first["subscription"]["id"], "current_period_start": period_end.isoformat(),
               "current_period_end": (period_end + timedelta(days=28)).isoformat()}  # fmt: skip
    renewal = await intake.payment(
        merchant, product=first["product"], subscription=renewed, paid_at=datetime.now(UTC).isoformat()
    )
    staged = "subscription.cancel_requested"

    for body in ({}, {"at_period_end": False}):
        response = await intake.client.post(
            f"/v1/payments/{renewal['id']}/subscription/cancel", headers=merchant, json=body
        )
        assert response.status_code == 202, response.text
    assert [c["at_period_end"] for c in await intake.staged(staged, renewal["id"])] == [True, False]


async def test_subscription_actions_on_a_one_time_payment_are_refused(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    for body in ({"subscription_action": "refund_only"}, {"extend_days": 7}):
        response = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "not_a_subscription"
    assert (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["status"] == "pending"


async def test_a_week_of_downtime_is_a_quarter_back_and_a_week_of_goodwill(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant, period_days=28, amount=2_900)
    refund = await intake.refund(merchant, payment["id"], reason="service_disruption", proration={"affected_days": 7})
    assert refund["amount"] == 725

    response = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"subscription_action": "refund_only", "extend_days": 7, "note": "Sorry for the outage"},
    )
    assert response.json()["extend_days"] == 7
    granted = await intake.staged("subscription.extension_granted", payment["id"])
    assert [(g["subscription_id"], g["days"], g["refund_id"]) for g in granted] == [
        (payment["subscription"]["id"], 7, refund["id"])
    ]


@pytest.mark.parametrize("typed", ["²", "0", "366", "7.5", "-3"])
async def test_days_of_goodwill_the_form_cannot_take_are_refused_and_nothing_is_decided(
    intake: IntakeUnderTest, typed: str
) -> None:
    """'²' passes str.isdigit() yet int() cannot read it: a clear 422, never a 500."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    page = f"/dashboard/refunds/{refund['id']}"

    answer = await owner.post_form(
        page, f"{page}/approve", {"subscription_action": "refund_only", "extend_days": typed}
    )

    assert answer.status_code == 422, answer.text[:300]
    assert "extend by 1 to 365 days" in answer.text
    shown = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert shown["status"] == "pending"


async def test_a_subscription_choice_the_form_does_not_offer_is_refused_and_nothing_is_decided(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    page = f"/dashboard/refunds/{refund['id']}"

    answer = await owner.post_form(page, f"{page}/approve", {"subscription_action": "refund_twice"})

    assert answer.status_code == 422, answer.text[:300]
    assert "invalid_subscription_action" in answer.text and "Approve refund" in answer.text
    shown = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert shown["status"] == "pending"


async def test_the_policy_auto_approves_small_clean_requests_only(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    await _auto_approve_duplicates_up_to(intake, merchant, 2_000)
    small = await intake.payment(merchant, amount=1_500)
    refund = await intake.refund(merchant, small["id"], reason="duplicate")
    assert refund["status"] == "processing"
    assert [(t["action"], t["actor"]) for t in refund["timeline"]][-1] == ("approved", "policy:auto_approve")
    [approved] = await intake.staged("refund.approved", small["id"])
    assert (approved["approved_by"], approved["channel"], approved["auto_approved"]) == (
        "policy:auto_approve",
        "api",
        True,
    )

    late = await intake.payment(merchant, amount=1_500, paid_at=(intake.clock() - timedelta(days=30)).isoformat())
    assert (await intake.refund(merchant, late["id"], reason="duplicate"))["status"] == "pending"
    big = await intake.payment(merchant, amount=5_000)
    assert (await intake.refund(merchant, big["id"], reason="duplicate"))["status"] == "pending"
    other_reason = await intake.payment(merchant, amount=1_500)
    assert (await intake.refund(merchant, other_reason["id"], reason="technical_issue"))["status"] == "pending"


async def test_small_requests_add_up_and_the_rule_stops_approving_at_its_limit(intake: IntakeUnderTest) -> None:
    """The rule lets a small refund go without a person. Five requests of 2,000 on a payment of 10,000 are not
    five small refunds: once the payment's refunds would pass the rule's limit, a person decides."""
    merchant = await intake.merchant()
    await _auto_approve_duplicates_up_to(intake, merchant, 2_000)
    payment = await intake.payment(merchant, amount=10_000)
    customer = await _customer_of(intake, merchant, payment["id"])

    async def ask(amount: int) -> str:
        asked = await intake.client.post(
            "/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate", "amount": amount}
        )
        assert asked.status_code == 201, asked.text
        status: str = asked.json()["status"]
        return status

    assert [await ask(1_500), await ask(500), await ask(1)] == ["processing", "processing", "pending"]
    assert len(await intake.staged("refund.approved", payment["id"])) == 2


async def test_above_the_threshold_two_people_must_approve_and_a_key_cannot_be_the_second(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 5_000, "currency": "EUR"}}
    )
    merchant_id = await intake.merchant_id(merchant)
    issued = await intake.client.post(f"/v1/merchants/{merchant_id}/api-keys", headers=ADMIN, json={"name": "two"})
    colleague = {"Authorization": f"Bearer {issued.json()['api_key']}"}
    payment = await intake.payment(merchant, amount=8_000)
    refund = await intake.refund(merchant, payment["id"])

    first = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()
    same_key_again = (await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)).json()
    assert first["status"] == same_key_again["status"] == "pending"
    assert len(same_key_again["approvals"]) == 1
    assert [t["action"] for t in same_key_again["timeline"]] == ["requested", "approval_1_of_2"]
    assert await intake.staged("refund.approved", payment["id"]) == []

    by_key = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=colleague)
    assert by_key.status_code == 409 and by_key.json()["error"]["code"] == "second_approval_needs_a_person"
    assert await intake.staged("refund.approved", payment["id"]) == []

    page = f"/dashboard/refunds/{refund['id']}"
    by_person = await owner.post_form(page, f"{page}/approve", {"amount": "80.00", "note": "checked the invoice"})
    assert by_person.status_code == 303 and by_person.headers["location"].endswith("done=approved")
    second = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert second["status"] == "processing"
    assert len(set(second["approvals"])) == 2 and second["approvals"][1].startswith("user:usr_")
    approved = await intake.staged("refund.approved", payment["id"])
    assert [e["approved_by"] for e in approved] == [second["approvals"][1]]
    names = [t["actor_name"] for t in second["timeline"]]
    assert names[1] == "API key default" and names[2] == f"Olive Owner <{owner.email}>"

    below = await intake.payment(merchant, amount=5_000)
    small = await intake.refund(merchant, below["id"])
    one_key = await intake.client.post(f"/v1/refunds/{small['id']}/approve", headers=merchant)
    assert one_key.json()["status"] == "processing"


async def _first_approval_then_its_author_loses_the_right(
    intake: IntakeUnderTest, merchant: Headers, owner: Person, refund_id: str, how: str
) -> None:
    """An approver gives the first approval of 80.00, then may no longer decide refunds (``how``)."""
    page = f"/dashboard/refunds/{refund_id}"
    if how == "key_revoked":
        merchant_id = await intake.merchant_id(merchant)
        issued = (await intake.client.post(f"/v1/merchants/{merchant_id}/api-keys", headers=ADMIN, json={})).json()
        key = {"Authorization": f"Bearer {issued['api_key']}"}
        first = await intake.client.post(f"/v1/refunds/{refund_id}/approve", headers=key)
        assert first.json()["status"] == "pending", first.text
        revoked = await owner.post_form(
            "/dashboard/settings", f"/dashboard/settings/api-keys/{issued['id']}/revoke", {}
        )
        assert revoked.status_code == 303, revoked.text[:500]
        return
    approver = await invite(intake, owner, "approver")
    first = await approver.post_form(page, f"{page}/approve", {"amount": "80.00"})
    assert first.headers["location"].endswith("done=approval_recorded")
    member_id = await intake.db.fetchval("SELECT id FROM merchant_users WHERE email = $1", approver.email)
    action, form = ("remove", {}) if how == "removed" else ("role", {"role": "viewer"})
    changed = await owner.post_form("/dashboard/team", f"/dashboard/team/{member_id}/{action}", form)
    assert changed.status_code == 303, changed.text[:500]


@pytest.mark.parametrize("how", ["removed", "demoted_to_viewer", "key_revoked"])
async def test_an_approval_counts_only_while_its_author_may_still_decide_refunds(
    intake: IntakeUnderTest, how: str
) -> None:
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 5_000, "currency": "EUR"}}
    )
    payment = await intake.payment(merchant, amount=8_000)
    refund = await intake.refund(merchant, payment["id"])
    await _first_approval_then_its_author_loses_the_right(intake, merchant, owner, refund["id"], how)
    lapsed = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert lapsed["approvals"] == [], "a pending refund lists only the approvals that still count"

    page = f"/dashboard/refunds/{refund['id']}"
    by_owner = await owner.post_form(page, f"{page}/approve", {"amount": "80.00"})
    assert by_owner.headers["location"].endswith("done=approval_recorded")
    after = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert after["status"] == "pending"
    assert len(after["approvals"]) == 1 and after["approvals"][0].startswith("user:usr_")  # the owner's only
    assert [t["action"] for t in after["timeline"]] == ["requested", "approval_1_of_2", "approval_1_of_2"]
    assert await intake.staged("refund.approved", payment["id"]) == []

    colleague = await invite(intake, owner, "approver")
    completed = await colleague.post_form(page, f"{page}/approve", {"amount": "80.00"})
    assert completed.headers["location"].endswith("done=approved")
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [8_000]


def _amount_field(page: str) -> str:
    found = re.search(r'<input id="amount" name="amount"[^>]* value="([^"]*)"', page)
    assert found, "the approve form's amount field"
    return found.group(1)


async def test_the_second_approver_sees_what_the_first_approved_and_approves_it_as_shown(
    intake: IntakeUnderTest,
) -> None:
    """The page showed only how many had approved and offered the amount asked for: the second approver, approving
    as shown, approved another amount, which started the approvals over and left the refund pending."""
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    )
    refund = await intake.refund(merchant, (await intake.payment(merchant, amount=9_000))["id"], amount=5_000)
    page = f"/dashboard/refunds/{refund['id']}"
    assert _amount_field((await owner.page(page)).text) == "50.00", "nothing approved yet: the amount asked for"
    approver = await invite(intake, owner, "approver")
    first = await approver.post_form(page, f"{page}/approve", {"amount": "30.00"})
    assert first.headers["location"].endswith("done=approval_recorded")

    shown = (await owner.page(page)).text
    approvals = re.search(r'<ul class="approvals"[^>]*>(.*?)</ul>', shown, re.S)
    assert approvals, "the approvals that count are listed"
    assert approver.email in approvals.group(1) and "€30.00" in approvals.group(1)
    assert _amount_field(shown) == "30.00"
    as_shown = await owner.post_form(page, f"{page}/approve", {"amount": _amount_field(shown)})

    assert as_shown.headers["location"].endswith("done=approved")
    approved = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (approved["status"], approved["amount"]) == ("processing", 3_000)


async def test_an_approval_of_another_amount_says_in_money_what_it_starts_over_with(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    )
    refund = await intake.refund(merchant, (await intake.payment(merchant, amount=9_000))["id"], amount=5_000)
    page = f"/dashboard/refunds/{refund['id']}"
    approver = await invite(intake, owner, "approver")
    await approver.post_form(page, f"{page}/approve", {"amount": "30.00"})

    restarted = await owner.post_form(page, f"{page}/approve", {"amount": "50.00"})

    assert restarted.headers["location"].endswith("done=approval_recorded")
    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    [note] = [t["note"] for t in timeline if t["action"] == "approval_restarted"]
    assert note == "earlier approvals were for another amount; approving €50.00 starts over"
    assert "€50.00" in (await owner.page(page)).text


async def test_an_approval_from_before_the_upgrade_is_said_to_have_recorded_no_subscription_choice(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    )
    refund = await intake.refund(merchant, (await intake.subscription_payment(merchant))["id"])
    page = f"/dashboard/refunds/{refund['id']}"
    approver = await invite(intake, owner, "approver")
    await approver.post_form(page, f"{page}/approve", {"amount": _amount_field((await approver.page(page)).text)})
    # As intake before its migration 0850 recorded it: the amount only.
    await intake.db.execute("UPDATE refund_approvals SET subscription_action = NULL WHERE refund_id = $1", refund["id"])

    await owner.post_form(page, f"{page}/approve", {"amount": _amount_field((await owner.page(page)).text)})

    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    [note] = [t["note"] for t in timeline if t["action"] == "approval_restarted"]
    assert note.startswith("approvals from before the upgrade recorded no subscription choice; approving "), note


async def _asked_to_cancel(intake: IntakeUnderTest, merchant: Headers, payment: dict[str, Any]) -> tuple[str, Headers]:
    """A portal request that asks to cancel the subscription too: its id, and the customer."""
    customer = await _customer_of(intake, merchant, payment["id"])
    asked = await intake.client.post(
        "/v1/portal/refund-requests",
        headers=customer,
        json={"reason": "unexpected_renewal", "amount": 1_000, "cancel_subscription": True},
    )
    assert asked.status_code == 201, asked.text
    return asked.json()["id"], customer


async def test_a_cancel_only_decision_for_a_subscription_set_to_end_already_is_told_by_its_rejection(
    intake: IntakeUnderTest,
) -> None:
    """No cancel is asked again, so no subscription.canceled follows: the customer heard nothing of the decision,
    nor the merchant's note, as the cancel-only rejection waits for the cancellation to tell them."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund_id, _ = await _asked_to_cancel(intake, merchant, payment)
    await _provider_cancelled(intake, merchant, payment, at_period_end=True)  # an API cancel at the period's end
    note = "Cancelled already; no refund per our policy."

    decided = await intake.client.post(
        f"/v1/refunds/{refund_id}/approve",
        headers=merchant,
        json={"subscription_action": "cancel_only", "note_to_customer": note},
    )

    assert decided.status_code == 200, decided.text
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []
    [rejected] = await intake.staged("refund.rejected", payment["id"])
    assert (rejected["cancel_only"], rejected["cancellation_follows"], rejected["note"]) == (True, False, note)
    assert rejected["subscription_continues"] is False


async def test_the_notice_after_a_cancel_only_says_whether_a_cancellation_was_asked(intake: IntakeUnderTest) -> None:
    """It said "The subscription will end at the close of its period" also when nothing was asked: the subscription
    had ended already, or its cancellation had been asked already."""
    merchant, owner = await merchant_with_owner(intake)
    running, cancelling = await intake.subscription_payment(merchant), await intake.subscription_payment(merchant)
    await _provider_cancelled(intake, merchant, cancelling, at_period_end=True)

    async def notice_after_cancel_only(payment: dict[str, Any]) -> str:
        page = f"/dashboard/refunds/{(await intake.refund(merchant, payment['id']))['id']}"
        decided = await owner.post_form(page, f"{page}/approve", {"subscription_action": "cancel_only"})
        assert decided.status_code == 303, decided.text[:500]
        shown = re.search(r'role="status"[^>]*>\s*([^<]+?)\s*<', (await owner.page(decided.headers["location"])).text)
        assert shown, "a notice"
        return shown.group(1)

    assert await notice_after_cancel_only(running) == (
        "The subscription will end at the close of its period; no money moves."
    )
    assert await notice_after_cancel_only(cancelling) == (
        "Closed as cancel only; no money moves. The subscription had ended or was set to end already, so no"
        " cancellation was asked again."
    )


async def test_a_subscription_set_to_end_at_its_period_end_is_not_said_to_continue(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    refused, refunded = await intake.subscription_payment(merchant), await intake.subscription_payment(merchant)
    for payment, decide, body in (
        (refused, "reject", {"note": "Outside the window"}),
        (refunded, "approve", {"subscription_action": "refund_only"}),
    ):
        refund_id, _ = await _asked_to_cancel(intake, merchant, payment)
        await _provider_cancelled(intake, merchant, payment, at_period_end=True)
        decided = await intake.client.post(f"/v1/refunds/{refund_id}/{decide}", headers=merchant, json=body)
        assert decided.is_success, decided.text

    [rejected] = await intake.staged("refund.rejected", refused["id"])
    [approved] = await intake.staged("refund.approved", refunded["id"])
    assert (rejected["subscription_continues"], approved["subscription_continues"]) == (False, False)


async def test_a_cancel_only_refused_by_the_provider_then_cancelled_by_the_team_shows_the_customer_cancelled(
    intake: IntakeUnderTest,
) -> None:
    """The team's cancel (the API's, with no refund) reached no request's timeline: the portal said "Cancellation
    in progress" for ever."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund_id, customer = await _asked_to_cancel(intake, merchant, payment)
    decided = await intake.client.post(
        f"/v1/refunds/{refund_id}/approve", headers=merchant, json={"subscription_action": "cancel_only"}
    )
    assert decided.status_code == 200, decided.text
    await _provider_refused_cancel(intake, merchant, payment, at_period_end=True, refund_id=refund_id)
    token = customer["Authorization"].removeprefix("Bearer ")
    status_url = f"/portal/{token}/requests/{refund_id}/status"
    assert (await intake.client.get(status_url)).json()["label"] == "Cancellation in progress"

    again = await intake.client.post(
        f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant, json={"at_period_end": True}
    )
    assert again.status_code == 202, again.text
    await _provider_cancelled(intake, merchant, payment, at_period_end=True)

    assert (await intake.client.get(status_url)).json()["label"] == "Subscription cancelled"


def _approve_form_as_shown(page: str) -> dict[str, str]:
    """What the approve form sends when its approver changes nothing: its fields as the page fills them."""
    action = re.search(r'name="subscription_action" value="([a-z_]+)" checked', page)
    days = re.search(r'<input id="extend_days"[^>]* value="([^"]*)"', page)
    told = re.search(r'<textarea id="approve-customer-note"[^>]*>([^<]*)</textarea>', page)
    assert action and days and told, "the approve form's subscription choice, extension and message"
    return {
        "amount": _amount_field(page),
        "subscription_action": action.group(1),
        "extend_days": days.group(1),
        "note_to_customer": html.unescape(told.group(1)),
    }


async def test_the_second_approver_completes_the_first_approvers_subscription_choice_as_shown(
    intake: IntakeUnderTest,
) -> None:
    """The first approver's subscription action, extension and message were dropped: the second's form offered
    refund and cancel, no extension, no message, and approving it as shown cancelled the subscription now."""
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    )
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    page = f"/dashboard/refunds/{refund['id']}"
    approver = await invite(intake, owner, "approver")
    chosen = {"subscription_action": "refund_only", "extend_days": "14", "note_to_customer": "Two weeks on us."}
    first = await approver.post_form(
        page, f"{page}/approve", {"amount": _amount_field((await owner.page(page)).text), **chosen}
    )
    assert first.headers["location"].endswith("done=approval_recorded")

    shown = (await owner.page(page)).text
    approvals = re.search(r'<ul class="approvals"[^>]*>(.*?)</ul>', shown, re.S)
    assert approvals and "refund only" in approvals.group(1).lower() and "14 days" in approvals.group(1)
    assert "Two weeks on us." in approvals.group(1)
    as_shown = _approve_form_as_shown(shown)
    assert {k: as_shown[k] for k in chosen} == chosen
    second = await owner.post_form(page, f"{page}/approve", as_shown)

    assert second.headers["location"].endswith("done=approved")
    decided = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (decided["status"], decided["subscription_action"], decided["extend_days"], decided["customer_note"]) == (
        "processing",
        "refund_only",
        14,
        "Two weeks on us.",
    )
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []
    assert [e["days"] for e in await intake.staged("subscription.extension_granted", payment["id"])] == [14]


async def test_a_second_approval_of_another_subscription_choice_starts_the_approvals_over(
    intake: IntakeUnderTest,
) -> None:
    """As another amount does: an approval counts for what it chose, action and extension too. Agreeing on both,
    the approver who leaves the message out completes the approval with the first approver's."""
    merchant, owner = await merchant_with_owner(
        intake, policy={"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    )
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    approve = f"/v1/refunds/{refund['id']}/approve"
    chosen = {"subscription_action": "refund_only", "extend_days": 7, "note_to_customer": "A week on us."}
    first = await intake.client.post(approve, headers=merchant, json=chosen)
    assert first.json()["status"] == "pending", first.text

    page = f"/dashboard/refunds/{refund['id']}"
    amount = f"{refund['amount'] / 100:.2f}"
    for other in ({"subscription_action": "refund_and_cancel"}, {"subscription_action": "refund_only"}):
        restarted = await owner.post_form(page, f"{page}/approve", {"amount": amount, **other})
        assert restarted.headers["location"].endswith("done=approval_recorded"), other
        again = await intake.client.post(approve, headers=merchant, json=chosen)  # the key approves as before
        assert again.json()["status"] == "pending", again.text
    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    assert [t["action"] for t in timeline].count("approval_restarted") == 4
    assert await intake.staged("refund.approved", payment["id"]) == []

    agreed = await owner.post_form(
        page, f"{page}/approve", {"amount": amount, "subscription_action": "refund_only", "extend_days": "7"}
    )
    assert agreed.headers["location"].endswith("done=approved")
    decided = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (decided["subscription_action"], decided["extend_days"], decided["customer_note"]) == (
        "refund_only",
        7,
        "A week on us.",
    )
    [approved] = await intake.staged("refund.approved", payment["id"])
    assert approved["note_to_customer"] == "A week on us."
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


async def test_a_cancel_only_of_a_subscription_the_provider_had_ended_tells_no_refund_and_when_it_ended(
    intake: IntakeUnderTest,
) -> None:
    """The cancellation carries the decision's no refund (the customer hears no rejection), and the provider's
    answer that the subscription had ended already: the request's timeline and the portal say so, with its end,
    not that it was cancelled now nor that access lasts "until then"."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    refund_id, customer = await _asked_to_cancel(intake, merchant, payment)
    decided = await intake.client.post(
        f"/v1/refunds/{refund_id}/approve", headers=merchant, json={"subscription_action": "cancel_only"}
    )
    assert decided.status_code == 200, decided.text
    [rejected] = await intake.staged("refund.rejected", payment["id"])
    assert (rejected["cancel_only"], rejected["cancellation_follows"]) == (True, True)
    [asked] = await intake.staged("subscription.cancel_requested", payment["id"])
    assert (asked["at_period_end"], asked["no_refund"]) == (True, True)
    assert asked["channel"] == rejected["channel"], "whether the customer asked: told with the cancellation"

    ended_on = datetime(2026, 10, 1, tzinfo=UTC)
    await intake.publish(
        SubscriptionCanceled(
            payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant), refund_id=refund_id,
            subscription_id=payment["subscription"]["id"], at_period_end=False, ends_at=ended_on,
            no_refund=True, already_ended=True,
        ),
        source="refundflow/processor",
    )  # fmt: skip
    recorded = "SELECT subscription_canceled_at IS NOT NULL FROM payments WHERE id = $1"
    await eventually(lambda: intake.db.fetchval(recorded, payment["id"]), timeout=30)

    timeline = (await intake.client.get(f"/v1/refunds/{refund_id}", headers=merchant)).json()["timeline"]
    [said] = [t["note"] for t in timeline if t["action"] == "subscription_canceled"]
    assert said == "The subscription had already ended on 1 October 2026: no further payments"
    token = customer["Authorization"].removeprefix("Bearer ")
    tracked = (await intake.client.get(f"/portal/{token}/requests/{refund_id}/status")).json()
    assert tracked["label"] == "Subscription ended"
    assert "No refund was made" in tracked["html"] and "had already ended" in tracked["html"]
    assert "keep access until then" not in tracked["html"]


@pytest.mark.parametrize("how", ["cancel", "approve"])
async def test_two_cancels_at_once_through_two_payments_of_one_subscription_ask_the_provider_once(
    intake: IntakeUnderTest, how: str
) -> None:
    """Each request locked only its own payment, then read whether a cancel was asked through any payment of the
    subscription: two at once, through the first payment and a renewal, both read none and both asked (the
    customer was told of the cancellation twice)."""
    merchant = await intake.merchant()
    for _ in range(5):  # each round a new subscription: the two requests meet at the read every time
        first = await intake.subscription_payment(merchant)
        renewal = await intake.payment(merchant, product=first["product"], subscription=first["subscription"])
        if how == "cancel":
            answers = await asyncio.gather(
                *(
                    intake.client.post(f"/v1/payments/{p['id']}/subscription/cancel", headers=merchant, json={})
                    for p in (first, renewal)
                )
            )
        else:
            refunds = [await intake.refund(merchant, p["id"]) for p in (first, renewal)]
            answers = await asyncio.gather(
                *(intake.client.post(f"/v1/refunds/{r['id']}/approve", headers=merchant) for r in refunds)
            )
        assert all(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
        asked = [c for p in (first, renewal) for c in await intake.staged("subscription.cancel_requested", p["id"])]
        assert len(asked) == 1, asked


Step = Callable[[asyncpg.Connection], Awaitable[None]]


async def batch_and_person(
    intake: IntakeUnderTest, *, batch_first: Step, person: Step, batch_then: Step
) -> list[object]:
    """A consumer batch's transaction runs ``batch_first``; a person's transaction runs ``person`` until it waits for
    a lock; the batch then runs ``batch_then`` and commits. What the person's transaction came to (None, or its
    error: a deadlock if the two took their locks in other orders)."""
    async with intake.db.acquire() as batch_conn, intake.db.acquire() as person_conn:
        person_pid = person_conn.get_server_pid()
        async with batch_conn.transaction():
            await batch_first(batch_conn)

            async def persons_turn() -> None:
                async with person_conn.transaction():
                    await person(person_conn)

            waiting = asyncio.create_task(persons_turn())

            async def person_waits() -> bool:
                state = await intake.db.fetchval(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", person_pid
                )
                return bool(state == "Lock")

            await eventually(person_waits)
            await batch_then(batch_conn)
        return list(await asyncio.gather(waiting, return_exceptions=True))
