"""Refund requests and the merchant's decisions: reasons, hard rules, rejection, transitions, the audit trail."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest

from refundflow_shared.events import PaymentDisputed
from tests.support.dashboard_people import csrf_of, invite, merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_reasons_are_structured_and_other_needs_words(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    before = await intake.written()
    for body, code in (
        ({"reason": "because"}, "invalid_request"),
        ({"reason": "other"}, "reason_details_required"),
    ):
        response = await intake.client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], **body},
        )
        assert response.status_code == 422 and response.json()["error"]["code"] == code
    assert await intake.written() == before
    refund = await intake.refund(merchant, payment["id"], reason="other", reason_details="Bought the wrong plan")
    assert (refund["reason"], refund["reason_details"]) == ("other", "Bought the wrong plan")


async def test_a_disputed_payment_refuses_refunds_with_a_clear_code(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    await intake.publish(
        PaymentDisputed(
            payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant), dispute_id="dp_1", reason="fraud"
        )
    )

    async def disputed() -> bool:
        return bool((await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()["disputed"])

    await eventually(disputed, timeout=30)
    before = await intake.written()
    response = await intake.client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "fraudulent"},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "payment_disputed"
    assert await intake.written() == before


async def test_twenty_parallel_partial_requests_never_exceed_the_captured_amount(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000)
    body = {"payment_id": payment["id"], "reason": "service_disruption", "amount": 700}

    responses = await asyncio.gather(
        *(
            intake.client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": uuid.uuid4().hex}, json=body)
            for _ in range(20)
        )
    )

    assert sorted(r.status_code for r in responses) == [201] * 14 + [422] * 6
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 422} == {"refund_exceeds_refundable"}
    after = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert sum(r["amount"] for r in after["refunds"]) == 9_800 <= payment["amount"]
    assert after["refundable_amount"] == 200


async def test_rejecting_with_a_note_tells_the_customer_and_is_final(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])

    rejected = await intake.client.post(
        f"/v1/refunds/{refund['id']}/reject", headers=merchant, json={"note": "The licence was already used."}
    )
    again = await intake.client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant)
    approve = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)

    assert rejected.status_code == again.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["decision_note"] == "The licence was already used."
    assert approve.status_code == 409
    assert approve.json()["error"]["code"] == "invalid_status_transition"
    events = await intake.staged("refund.rejected", payment["id"])
    assert [(e["refund_id"], e["note"], e["channel"]) for e in events] == [
        (refund["id"], "The licence was already used.", "api")
    ]
    # A rejected request no longer holds the money.
    assert (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()["refundable_amount"] == (
        payment["amount"]
    )


async def test_an_approved_refund_cannot_be_rejected(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    response = await intake.client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_status_transition"


async def test_a_decided_refund_refuses_a_decision_that_asks_anything_else_and_repeats_the_same_one(
    intake: IntakeUnderTest,
) -> None:
    """A repeat of the decision answers 200 again (a retry); another amount, note or decision is 409: it was
    answered 200 as though done, and nothing of it was recorded."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=5_000)
    approve, reject = f"/v1/refunds/{refund['id']}/approve", f"/v1/refunds/{refund['id']}/reject"
    told = {"note_to_customer": "On its way."}
    first = await intake.client.post(approve, headers=merchant, json=told)
    assert first.status_code == 200 and first.json()["status"] == "processing"

    for repeat in (told, {"amount": 5_000, **told}, None):
        again = await intake.client.post(approve, headers=merchant, json=repeat)
        assert again.status_code == 200, (repeat, again.text)
    for other in (
        {"amount": 2_000, "note_to_customer": "Part of it, as agreed."},
        {"amount": 2_000, **told},
        {"note_to_customer": "Something else."},
        {"note": "checked the invoice", **told},
    ):
        refused = await intake.client.post(approve, headers=merchant, json=other)
        assert refused.status_code == 409, (other, refused.text)
        assert refused.json()["error"]["code"] == "invalid_status_transition"
        assert "already approved" in refused.json()["error"]["message"]
    decided = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (decided["amount"], decided["customer_note"], decided["decision_note"]) == (5_000, "On its way.", None)
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [5_000]

    other_payment = await intake.payment(merchant)
    declined = await intake.refund(merchant, other_payment["id"])
    reject = f"/v1/refunds/{declined['id']}/reject"
    assert (await intake.client.post(reject, headers=merchant, json={"note": "Used."})).status_code == 200
    for repeat in ({"note": "Used."}, None):
        assert (await intake.client.post(reject, headers=merchant, json=repeat)).status_code == 200
    another_note = await intake.client.post(reject, headers=merchant, json={"note": "Used twice."})
    assert another_note.status_code == 409
    assert another_note.json()["error"]["code"] == "invalid_status_transition"
    assert "already rejected" in another_note.json()["error"]["message"]
    assert [e["note"] for e in await intake.staged("refund.rejected", other_payment["id"])] == ["Used."]


async def test_a_decision_from_a_page_opened_before_anothers_says_the_refund_was_already_decided(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    approver = await invite(intake, owner, "approver")
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=5_000)
    page = f"/dashboard/refunds/{refund['id']}"
    opened_earlier = csrf_of((await approver.page(page)).text)

    approved = await owner.post_form(page, f"{page}/approve", {"amount": "50.00"})
    assert approved.headers["location"].endswith("done=approved")
    late = await approver.browser.post(
        f"{page}/approve",
        data={"csrf_token": opened_earlier, "amount": "20.00", "note_to_customer": "Part of it, as agreed."},
    )
    assert late.status_code == 409, late.text[:500]
    assert "Already decided: approved for €50.00" in late.text and "Approved. The refund" not in late.text
    assert "Your decision was not recorded" in late.text
    late_rejection = await approver.browser.post(f"{page}/reject", data={"csrf_token": opened_earlier, "note": "No."})
    assert late_rejection.status_code == 409 and "Already decided: approved for €50.00" in late_rejection.text
    decided = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (decided["amount"], decided["customer_note"]) == (5_000, None)
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [5_000]
    same = await approver.post_form(page, f"{page}/approve", {"amount": "50.00"})  # the same decision: a repeat
    assert same.status_code == 303 and same.headers["location"].endswith("done=approved")

    declined = await intake.refund(merchant, (await intake.payment(merchant))["id"])
    page = f"/dashboard/refunds/{declined['id']}"
    opened_earlier = csrf_of((await approver.page(page)).text)
    rejected = await owner.post_form(page, f"{page}/reject", {"note": "Used."})
    assert rejected.headers["location"].endswith("done=rejected_untold")  # the merchant's own refund
    late = await approver.browser.post(f"{page}/reject", data={"csrf_token": opened_earlier, "note": "Used twice."})
    assert late.status_code == 409 and "Already decided: rejected" in late.text
    assert "Rejected. The customer" not in late.text
    after = (await intake.client.get(f"/v1/refunds/{declined['id']}", headers=merchant)).json()
    assert after["decision_note"] == "Used."


async def test_the_notice_after_a_rejection_says_what_the_customer_is_told(intake: IntakeUnderTest) -> None:
    """It said "The customer is told, with your note" for every rejection: of a refund the merchant made through
    the API (the customer is told nothing), and when no note was given."""
    merchant, owner = await merchant_with_owner(intake)

    async def customers_request() -> str:
        payment = await intake.payment(merchant)
        token = await intake.client.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant, json={})
        customer = {"Authorization": f"Bearer {token.json()['token']}"}
        asked = await intake.client.post("/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate"})
        assert asked.status_code == 201, asked.text
        refund_id: str = asked.json()["id"]
        return refund_id

    async def notice_after_rejecting(refund_id: str, note: str) -> str:
        page = f"/dashboard/refunds/{refund_id}"
        rejected = await owner.post_form(page, f"{page}/reject", {"note": note})
        assert rejected.status_code == 303, rejected.text[:500]
        shown = re.search(r'role="status"[^>]*>\s*([^<]+?)\s*<', (await owner.page(rejected.headers["location"])).text)
        assert shown, "a notice"
        return shown.group(1)

    told_with_note = await notice_after_rejecting(await customers_request(), "Bought twice? One was refunded.")
    told_without = await notice_after_rejecting(await customers_request(), "")
    merchants_own = await intake.refund(merchant, (await intake.payment(merchant))["id"])
    untold = await notice_after_rejecting(merchants_own["id"], "Made by mistake.")

    assert told_with_note == "Rejected. The customer is told, with your note."
    assert told_without == "Rejected. The customer is told, with no note from you."
    assert untold == "Rejected. The customer is not told: you made this refund yourself, they asked for nothing."


async def test_a_merchant_being_changed_holds_up_none_of_its_refunds(intake: IntakeUnderTest) -> None:
    """The payment is read with its merchant's name and portal switch for the customer's events, but only the
    payment is locked: a change to the merchant's row, still uncommitted, delays no request and no decision."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    async with intake.db.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE merchants SET name = name WHERE id = $1", await intake.merchant_id(merchant))
        refund = await asyncio.wait_for(intake.refund(merchant, payment["id"]), timeout=10)
        approve = intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
        approved = await asyncio.wait_for(approve, timeout=10)
    assert approved.status_code == 200 and approved.json()["status"] == "processing"
    [requested] = await intake.staged("refund.requested", payment["id"])
    [told] = await intake.staged("refund.approved", payment["id"])
    assert (requested["merchant_name"], told["merchant_name"]) == ("Acme", "Acme")


async def test_the_merchant_may_approve_less_than_asked_but_never_more(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=4_000)
    more = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 4_001})
    assert more.status_code == 422 and more.json()["error"]["code"] == "approval_exceeds_request"
    # Said as people read and type amounts: the dashboard shows it beside a field taking 40.00, not 4000.
    assert more.json()["error"]["message"] == "approve between €0.01 and the €40.00 asked for, not €40.01"

    less = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 2_500})
    assert (less.json()["status"], less.json()["amount"], less.json()["requested_amount"]) == (
        "processing",
        2_500,
        4_000,
    )
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [2_500]
    paid = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert paid["refundable_amount"] == 7_500


async def test_the_timeline_says_who_did_what_why_and_when(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], reason="technical_issue", reason_details="Crashes on start")
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"note": "Known bug"})

    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    key_id = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"][0]["id"]
    assert [(t["action"], t["status"], t["actor"], t["note"]) for t in timeline] == [
        ("requested", "pending", f"api_key:{key_id}", "technical_issue: Crashes on start"),
        ("approved", "processing", f"api_key:{key_id}", "Known bug"),
    ]
    assert timeline[0]["at"] <= timeline[1]["at"]


async def test_an_approval_the_provider_cannot_take_exactly_is_said_in_money_at_the_amount(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.payment(merchant, amount=10_000, currency="KWD")
    refund = await intake.refund(merchant, payment["id"], amount=3_330)
    page = f"/dashboard/refunds/{refund['id']}"

    refused = await owner.post_form(page, f"{page}/approve", {"amount": "3.325"})

    assert refused.status_code == 422, refused.text[:500]
    said = re.search(r'<p class="field-error" id="amount-error">(.*?)</p>', refused.text, re.S)
    assert said is not None, refused.text[:2000]
    assert "KWD 3.325" in said.group(1) and "KWD 0.010" in said.group(1), said.group(1)
    assert "3325" not in said.group(1) and "minor units" not in said.group(1)
    assert "amount_not_representable" in said.group(1)
