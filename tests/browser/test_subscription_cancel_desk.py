"""Cancel subscription on a payment's page, in a real browser, against the whole system: an approver cancels with
the keyboard and the provider does it; a viewer is offered nothing and cannot post it."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP
from tests.browser.people import accept_invite, assert_accessible, invite
from tests.browser.stack import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_an_approver_cancels_a_subscription_at_its_period_end_and_a_viewer_cannot(
    stack: Stack, page: Page, browser: Browser
) -> None:
    merchant = stack.merchant()
    accept_invite(page, merchant["owner_invite_url"], name="Olive Owner")
    payment = stack.subscription_payment(merchant)
    approver = browser.new_context(viewport=DESKTOP).new_page()
    accept_invite(approver, invite(page, stack.url, f"approver-{uuid.uuid4().hex[:6]}@acme.example", "approver"))
    viewer = browser.new_context(viewport=DESKTOP).new_page()
    accept_invite(viewer, invite(page, stack.url, f"viewer-{uuid.uuid4().hex[:6]}@acme.example", "viewer"))

    approver.goto(f"{stack.url}/dashboard/payments")
    approver.get_by_role("link", name=payment["id"]).click()
    expect(approver.get_by_role("heading", name="Subscription")).to_be_visible()
    assert_accessible(approver)
    cancel = approver.get_by_role("button", name="Cancel subscription")
    cancel.click()  # no choice of when yet: the browser asks for one, nothing is sent
    approver.get_by_role("radio", name=re.compile("^At the end of the period")).focus()
    approver.keyboard.press("Space")
    cancel.focus()
    approver.keyboard.press("Enter")
    expect(approver.get_by_role("status").filter(has_text="Cancellation asked of the provider")).to_be_visible()
    assert_accessible(approver)

    def cancelled() -> bool | None:
        approver.reload()
        return "Cancelled at the period" in approver.locator("#subscription-heading + dl").inner_text() or None

    wait_for(cancelled, what="the provider's cancel, shown on the payment's page")

    other = stack.subscription_payment(merchant)
    viewer.goto(f"{stack.url}/dashboard/payments/{other['id']}")
    expect(viewer.get_by_text("Cancelling a subscription takes the approver or owner role")).to_be_visible()
    expect(viewer.get_by_role("button", name="Cancel subscription")).to_have_count(0)
    assert_accessible(viewer)
    token = viewer.locator('input[name="csrf_token"]').first.get_attribute("value")  # the sign-out form's
    forged = viewer.request.post(
        f"{stack.url}/dashboard/payments/{other['id']}/subscription/cancel",
        form={"csrf_token": token or "", "when": "now", "form_key": "forged"},
    )
    assert forged.status == 403 and "not_allowed_for_role" in forged.text()
    viewer.reload()
    expect(viewer.locator("#subscription-heading + dl")).to_contain_text("Running")
