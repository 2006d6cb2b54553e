"""The refund desk in a real browser, against the whole system: invite, sign in, find, decide, watch it finish."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP
from tests.browser.people import accept_invite, assert_accessible, invite, open_refund_from_payments, status_badge
from tests.browser.stack import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def _owner(stack: Stack, page: Page, name: str = "Olive Owner") -> dict[str, Any]:
    merchant = stack.merchant()
    accept_invite(page, merchant["owner_invite_url"], name=name)
    return merchant


def test_the_owner_accepts_the_invite_finds_a_request_on_payments_approves_it_and_watches_it_succeed(
    stack: Stack, page: Page
) -> None:
    merchant = _owner(stack, page)
    payment = stack.payment(merchant)
    refund = stack.request_refund(merchant, payment)
    assert_accessible(page)  # the Payments page

    open_refund_from_payments(page, stack.url, payment["customer_email"])
    expect(page).to_have_url(re.compile(f"/dashboard/refunds/{refund['id']}$"))
    assert_accessible(page)
    page.get_by_role("button", name="Approve refund").click()
    expect(page.get_by_role("status").filter(has_text="Approved.")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")

    expect(status_badge(page)).to_have_text("Succeeded", timeout=60_000)  # live, by polling: no reload
    assert page.evaluate("window.stillTheSamePage") is True
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(f"Olive Owner <{merchant['owner_email']}>")
    expect(timeline).to_contain_text("Refunded at the provider")
    assert stack.refund(merchant, refund["id"])["status"] == "succeeded"


def test_a_rejection_with_a_note_reaches_the_customer_by_email(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    payment = stack.payment(merchant)
    refund = stack.customer_requests_refund(merchant, payment)  # the merchant's own, dropped, tells them nothing
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    note = f"The licence key was already activated ({uuid.uuid4().hex[:6]})."
    page.get_by_label("Note to the customer").fill(note)
    page.get_by_role("button", name="Reject request").click()
    expect(status_badge(page)).to_have_text("Rejected")

    def rejection() -> Any:
        mails = [m for m in stack.mails_to(payment["customer_email"]) if "About your refund" in str(m["Subject"])]
        return mails[0] if mails else None

    message = wait_for(rejection, what="the rejection email at the SMTP sink")
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and note in body.get_content()


def test_rejecting_the_merchants_own_refund_offers_no_note_to_the_customer(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    payment = stack.payment(merchant)
    refund = stack.request_refund(merchant, payment)  # made through the API: its rejection is told to nobody
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    reject = page.locator("form[action$='/reject']")
    expect(reject.get_by_label("Note to the customer")).to_have_count(0)
    expect(reject).to_contain_text("The customer is not told")
    assert_accessible(page)
    note = f"Duplicate of an earlier refund ({uuid.uuid4().hex[:6]})."
    reject.get_by_label(re.compile("^Note for your team")).fill(note)
    page.get_by_role("button", name="Reject request").click()
    expect(status_badge(page)).to_have_text("Rejected")
    expect(page.get_by_role("status").filter(has_text="The customer is not told")).to_be_visible()
    rejected = stack.refund(merchant, refund["id"])
    assert (rejected["decision_note"], rejected["customer_note"]) == (note, None)  # kept for the team, told no one


def test_a_subscription_refund_cancels_the_subscription_by_default(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    payment = stack.subscription_payment(merchant)
    refund = stack.request_refund(merchant, payment, reason="unexpected_renewal")
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page.get_by_role("radio", name=re.compile("^Refund and cancel"))).to_be_checked()
    page.get_by_label(re.compile("^Extend the period by")).fill("3")  # a period that ends now cannot be extended
    page.get_by_role("button", name="Approve refund").click()
    extend = page.get_by_label(re.compile("^Extend the period by"))
    expect(extend).to_have_accessible_description(re.compile("extension_conflicts_with_cancel"))
    extend.fill("")
    page.get_by_role("button", name="Approve refund").click()
    expect(status_badge(page)).to_have_text("Succeeded", timeout=60_000)
    decided = stack.refund(merchant, refund["id"])
    assert (decided["subscription_action"], decided["extend_days"], decided["amount"]) == (
        "refund_and_cancel",
        None,
        3_000,
    )


def test_a_partial_refund_through_the_proration_calculator(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    payment = stack.subscription_payment(merchant)  # 30.00 EUR for 30 days
    refund = stack.request_refund(merchant, payment, reason="service_disruption")
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page.get_by_label("Out of a period of (days)")).to_have_value("30")
    page.get_by_label("Days", exact=True).select_option("unused")
    page.get_by_label("Number of days").fill("12")
    expect(page.locator("#prorate-result")).to_contain_text("Preview: 12.00 EUR for 12 of 30 days")
    page.get_by_role("button", name="Use prorated amount").click()
    expect(page.get_by_label(re.compile("^Amount to refund"))).to_have_value("12.00")
    page.get_by_role("radio", name=re.compile("^Refund only")).check()
    page.get_by_role("button", name="Approve refund").click()
    expect(status_badge(page)).to_have_text("Succeeded", timeout=60_000)
    assert stack.refund(merchant, refund["id"])["amount"] == 1_200


def test_a_viewer_reads_but_cannot_decide(stack: Stack, page: Page, browser: Browser) -> None:
    merchant = _owner(stack, page)
    refund = stack.request_refund(merchant, stack.payment(merchant))
    viewer_link = invite(page, stack.url, f"viewer-{uuid.uuid4().hex[:6]}@acme.example", "viewer")
    viewer = browser.new_context(viewport=DESKTOP).new_page()
    accept_invite(viewer, viewer_link)
    viewer.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(viewer.get_by_text("deciding it takes the approver or owner role")).to_be_visible()
    expect(viewer.get_by_role("button", name="Approve refund")).to_have_count(0)

    token = viewer.locator('input[name="csrf_token"]').first.get_attribute("value")  # the sign-out form's
    forged = viewer.request.post(
        f"{stack.url}/dashboard/refunds/{refund['id']}/approve", form={"csrf_token": token or ""}
    )
    assert forged.status == 403 and "not_allowed_for_role" in forged.text()
    assert stack.refund(merchant, refund["id"])["status"] == "pending"


def test_two_people_must_approve_above_the_threshold_and_an_api_key_cannot_be_the_second(
    stack: Stack, page: Page, browser: Browser
) -> None:
    merchant = _owner(stack, page)
    page.goto(f"{stack.url}/dashboard/refund-policy")
    page.get_by_label("Two people must approve refunds above").check()
    page.get_by_label("Above (amount)").fill("10.00")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    refund = stack.request_refund(merchant, stack.payment(merchant))

    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page.get_by_text("needs 2 different people")).to_be_visible()
    page.get_by_label(re.compile("^Amount to refund")).fill("30.00")  # less than the 49.99 asked for
    page.get_by_role("button", name="Approve refund").click()
    expect(page.get_by_role("status").filter(has_text="Another person must approve")).to_be_visible()
    page.get_by_role("button", name="Approve refund").click()  # the same person again: still one approver
    expect(status_badge(page)).to_have_text("Pending")

    agreeing = {"amount": 3_000}  # the key's approval would complete it (another amount would start over)
    by_key = stack.api.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant["auth"], json=agreeing)
    assert by_key.status_code == 409 and by_key.json()["error"]["code"] == "second_approval_needs_a_person"

    approver_link = invite(page, stack.url, f"approver-{uuid.uuid4().hex[:6]}@acme.example", "approver")
    approver = browser.new_context(viewport=DESKTOP).new_page()
    accept_invite(approver, approver_link, name="Arno Approver")
    approver.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    # What the first approved, offered as it is: approved as shown, it completes the approval, not restarts it.
    expect(approver.locator("ul.approvals")).to_have_text(f"Olive Owner <{merchant['owner_email']}>: €30.00")
    expect(approver.get_by_label(re.compile("^Amount to refund"))).to_have_value("30.00")
    assert_accessible(approver)
    approver.get_by_role("button", name="Approve refund").click()
    expect(status_badge(approver)).to_have_text("Succeeded", timeout=60_000)
    expect(approver.locator("#timeline")).to_contain_text("Arno Approver")
    decided = stack.refund(merchant, refund["id"])
    assert (len(decided["approvals"]), decided["amount"]) == (2, 3_000)


def test_another_merchants_refund_is_a_404_page(stack: Stack, page: Page) -> None:
    other = stack.merchant(name="Other Shop")
    theirs = stack.request_refund(other, stack.payment(other))
    merchant = _owner(stack, page)
    stack.request_refund(merchant, stack.payment(merchant))
    answer = page.goto(f"{stack.url}/dashboard/refunds/{theirs['id']}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    # The sidebar counts the merchant's own pending requests, as on every other page (not the other shop's).
    expect(page.get_by_role("link", name="Refunds")).to_have_text(re.compile(r"^\s*Refunds\s+1 pending\s*$"))
    expect(page.get_by_text(theirs["customer_email"] if "customer_email" in theirs else "Ada")).to_have_count(0)
    assert_accessible(page)


def test_saving_the_policy_unchanged_keeps_excluded_categories_that_hold_a_comma(stack: Stack, page: Page) -> None:
    """Categories were one comma-separated line: "food, drink" came back as "food" and "drink", and a request in
    the excluded category was then approved automatically. One category per line now."""
    merchant = stack.merchant()
    policy = {
        "excluded_categories": ["food, drink", "gift cards"],
        "auto_approve": {"max_amount": {"amount": 2_000, "currency": "EUR"}, "reasons": ["duplicate"]},
    }
    # Set with the key before the owner joins: from then on, only owners change the approval rules.
    assert stack.api.put("/v1/refund-policy", headers=merchant["auth"], json=policy).status_code == 200
    accept_invite(page, merchant["owner_invite_url"], name="Olive Owner")
    payment = stack.payment(
        merchant,
        amount=1_500,
        product={"id": "prod_lunch", "name": "Lunch box", "kind": "one_time", "category": "food, drink"},
    )

    def quote() -> dict[str, Any]:
        asked = {"payment_id": payment["id"], "reason": "duplicate"}
        answer = stack.api.post("/v1/refunds/quote", headers=merchant["auth"], json=asked)
        assert answer.status_code == 200, answer.text
        quoted: dict[str, Any] = answer.json()
        return quoted

    before = quote()
    assert "excluded_category" in before["flags"] and before["auto_approved"] is False

    page.goto(f"{stack.url}/dashboard/refund-policy")
    categories = page.get_by_label(re.compile("^Excluded product categories"))
    expect(categories).to_have_value("food, drink\ngift cards")
    assert_accessible(page)
    categories.focus()  # typed with the keyboard: Enter starts the next line, it does not submit the form
    page.keyboard.press("End")
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type("tickets, events")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()

    saved = stack.api.get("/v1/refund-policy", headers=merchant["auth"]).json()
    assert saved["policy"]["excluded_categories"] == ["food, drink", "gift cards", "tickets, events"]
    after = quote()
    assert "excluded_category" in after["flags"] and after["auto_approved"] is False

    page.get_by_label("Product id").fill("prod_lunch")  # a product's own categories: one per line too
    page.get_by_label(re.compile("^Excluded categories")).fill("food, drink\nsnacks")
    page.get_by_role("button", name="Save override").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    overrides = stack.api.get("/v1/refund-policy", headers=merchant["auth"]).json()["product_overrides"]
    assert overrides["prod_lunch"]["excluded_categories"] == ["food, drink", "snacks"]
    assert "excluded_category" in quote()["flags"]
