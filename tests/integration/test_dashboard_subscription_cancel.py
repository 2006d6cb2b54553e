"""The dashboard's Cancel subscription, on the payment's page: the same cancel as the API's, for approvers and
owners, with the CSRF token and the single-use form key every dashboard form carries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from refundflow_shared.events import Event, SubscriptionCancelFailed
from tests.support.dashboard_people import Person, csrf_of, invite, merchant_with_owner
from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
_FORM_KEY = re.compile(r'name="form_key" value="([^"]+)"')


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def _handled(intake: IntakeUnderTest, sent: Event) -> None:
    async def handled() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", sent.id))

    await eventually(handled, timeout=30)


async def _provider_refused_cancel(
    intake: IntakeUnderTest, merchant: Headers, payment: dict[str, Any], *, at_period_end: bool, refund_id: str | None
) -> None:
    refused = SubscriptionCancelFailed(
        payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant),
        subscription_id=payment["subscription"]["id"], at_period_end=at_period_end, refund_id=refund_id,
        reason="Refused (card_declined): the subscription is past due",
    )  # fmt: skip
    await _handled(intake, await intake.publish(refused, source="refundflow/processor"))


async def _cancel_form(person: Person, payment_id: str) -> dict[str, str]:
    """The payment's page as the person opens it: its CSRF token and the cancel form's single-use key."""
    page = await person.page(f"/dashboard/payments/{payment_id}")
    assert page.status_code == 200, page.text[:500]
    key = _FORM_KEY.search(page.text)
    assert key, "the page offers Cancel subscription"
    return {"csrf_token": csrf_of(page.text), "form_key": key.group(1)}


async def test_an_approver_cancels_a_subscription_at_its_period_end_from_the_payments_page(
    intake: IntakeUnderTest,
) -> None:
    """Only the API could cancel: the dashboard granted approvers the permission, and offered nothing that used it."""
    merchant, owner = await merchant_with_owner(intake)
    approver = await invite(intake, owner, "approver")
    payment = await intake.subscription_payment(merchant)
    listed = (await approver.page("/dashboard/payments")).text
    assert f'href="/dashboard/payments/{payment["id"]}"' in listed, "the payment opens from the list"
    page = (await approver.page(f"/dashboard/payments/{payment['id']}")).text
    assert "Cancel subscription" in page
    assert 'name="when" value="period_end"' in page and 'name="when" value="now"' in page

    form = await _cancel_form(approver, payment["id"])
    answer = await approver.browser.post(
        f"/dashboard/payments/{payment['id']}/subscription/cancel", data={**form, "when": "period_end"}
    )

    assert answer.status_code == 303, answer.text[:500]
    assert answer.headers["location"] == f"/dashboard/payments/{payment['id']}?done=cancel_asked"
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [(c["at_period_end"], c["refund_id"]) for c in cancels] == [(True, None)]
    assert cancels[0]["requested_by"].startswith("user:"), "asked as the person, not as a key"
    shown = (await approver.page(answer.headers["location"])).text
    assert "Cancellation asked of the provider" in shown


async def test_the_same_cancel_form_sent_again_asks_nothing_even_after_the_provider_refused(
    intake: IntakeUnderTest,
) -> None:
    """A reload or a double click of the form sends its single-use key again: it asks the provider once, also when
    a refusal has since made the cancel askable again; a form opened anew asks again."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    action = f"/dashboard/payments/{payment['id']}/subscription/cancel"
    form = {**await _cancel_form(owner, payment["id"]), "when": "now"}

    first = await owner.browser.post(action, data=form)
    await _provider_refused_cancel(intake, merchant, payment, at_period_end=False, refund_id=None)
    again = await owner.browser.post(action, data=form)

    assert (first.status_code, again.status_code) == (303, 303)
    assert again.headers["location"].endswith("?done=cancel_not_asked")
    staged = "subscription.cancel_requested"
    assert [c["at_period_end"] for c in await intake.staged(staged, payment["id"])] == [False]

    fresh = await owner.browser.post(action, data={**await _cancel_form(owner, payment["id"]), "when": "now"})
    assert fresh.status_code == 303
    assert [c["at_period_end"] for c in await intake.staged(staged, payment["id"])] == [False, False]


async def test_a_cancel_without_a_choice_of_when_is_refused_and_asks_nothing(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    answer = await owner.browser.post(
        f"/dashboard/payments/{payment['id']}/subscription/cancel", data=await _cancel_form(owner, payment["id"])
    )
    assert answer.status_code == 422
    assert "Choose when the subscription ends" in answer.text
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


async def test_a_viewer_sees_no_cancel_and_cannot_post_one(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    viewer = await invite(intake, owner, "viewer")
    payment = await intake.subscription_payment(merchant)
    page = await viewer.page(f"/dashboard/payments/{payment['id']}")
    assert page.status_code == 200
    assert "Cancel subscription" not in page.text and 'name="form_key"' not in page.text

    forged = await viewer.browser.post(
        f"/dashboard/payments/{payment['id']}/subscription/cancel",
        data={"csrf_token": csrf_of(page.text), "when": "now", "form_key": "forged"},
    )

    assert forged.status_code == 403 and "not_allowed_for_role" in forged.text
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


async def test_another_merchants_payment_page_is_a_404(intake: IntakeUnderTest) -> None:
    other = await intake.merchant()
    theirs = await intake.subscription_payment(other)
    _, owner = await merchant_with_owner(intake)
    assert (await owner.page(f"/dashboard/payments/{theirs['id']}")).status_code == 404
    forged = await owner.browser.post(
        f"/dashboard/payments/{theirs['id']}/subscription/cancel",
        data={"csrf_token": csrf_of((await owner.page("/dashboard/payments")).text), "when": "now", "form_key": "k"},
    )
    assert forged.status_code == 404
    assert await intake.staged("subscription.cancel_requested", theirs["id"]) == []


async def test_a_refund_whose_cancel_the_provider_refused_leads_to_the_payments_cancel(
    intake: IntakeUnderTest,
) -> None:
    """The timeline told the team to "cancel it again", and the dashboard had nowhere to do it."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    approved = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    assert approved.status_code == 200, approved.text
    await _provider_refused_cancel(intake, merchant, payment, at_period_end=False, refund_id=refund["id"])

    page = (await owner.page(f"/dashboard/refunds/{refund['id']}")).text

    assert "cancel it again on the payment&#39;s page" in page
    assert f'href="/dashboard/payments/{payment["id"]}#subscription-heading"' in page
    payment_page = (await owner.page(f"/dashboard/payments/{payment['id']}")).text
    assert "Cancel subscription" in payment_page and refund["id"] in payment_page
