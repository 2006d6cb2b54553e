"""What a customer sees, page by page, as the browser tests and `make screenshots` drive it: the portal from the
link in their email (asking, pending, refunded, cancelled, outside the policy), the pages for links that do not
work or a portal switched off, and the merchant's hosted refund policy with its embeddable version."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, expect

from refundflow_intake.portal import tokens
from refundflow_intake.settings import IntakeSettings
from tests.browser.conftest import DESKTOP
from tests.browser.people import accept_invite
from tests.browser.stack import ADMIN_TOKEN, Stack
from tests.support.waiting import wait_for

Visit = Callable[[str, Page], None]
_LINK = re.compile(r"(https?://\S+/portal/pt_[A-Za-z0-9_.-]+)")


def email_to(stack: Stack, to: str, subject: str) -> EmailMessage:
    def arrived() -> EmailMessage | None:
        return next((m for m in stack.mails_to(to) if subject in str(m["Subject"])), None)

    return wait_for(arrived, timeout=90, what=f"the email '{subject}' at the SMTP sink")


def link_in(message: EmailMessage) -> str:
    """The portal link of a customer email, as its reader would click it (this stack's address)."""
    body = message.get_body(("plain",))
    assert body is not None
    found = _LINK.search(str(body.get_content()))
    assert found, "every customer email carries the link to the payment's page"
    return found.group(1)


def email_link(stack: Stack, to: str, subject: str) -> str:
    return link_in(email_to(stack, to, subject))


def merchants_first_refund(stack: Stack, merchant: dict[str, Any], payment: dict[str, Any], amount: int) -> str:
    """The merchant refunds part of a payment by itself: the customer gets emails, each with their link."""
    refund = stack.request_refund(merchant, payment, amount=amount, reason="duplicate")
    keep = {"subscription_action": "refund_only"} if payment.get("subscription") else {}
    approved = stack.api.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant["auth"], json=keep)
    assert approved.is_success, approved.text
    money = f"€{amount // 100}.{amount % 100:02d}"
    return email_link(stack, payment["customer_email"], f"Your refund of {money} is on its way")


def portal_link(stack: Stack, merchant: dict[str, Any], payment: dict[str, Any]) -> str:
    """The payment's link, as the merchant's own pages would send it (the portal-token call)."""
    minted = stack.api.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant["auth"])
    assert minted.status_code == 201, minted.text
    link: str = minted.json()["url"]
    return link


def ask_in_the_portal(page: Page, reason: str, details: str = "", *, cancel: bool | None = None) -> None:
    page.get_by_label("Why are you asking?").select_option(label=reason)
    if details:
        page.get_by_label(re.compile("^What happened?")).fill(details)
    if cancel is not None:
        page.get_by_role("radio", name=re.compile("^Cancel it too" if cancel else "^Keep it")).check()
    page.get_by_role("button", name="Request a refund").click()
    expect(page.get_by_role("status").filter(has_text="your request is sent")).to_be_visible()


def request_status(page: Page) -> Any:
    return page.locator("article.request .badge").first


def expired_link(stack: Stack, merchant_id: str, payment_id: str) -> str:
    """A link that was good until an hour ago (signed as intake signs them)."""
    secret = IntakeSettings(refundflow_admin_token=ADMIN_TOKEN).portal_secret()
    grant = tokens.PortalGrant(merchant_id, payment_id, datetime.now(UTC) - timedelta(hours=1))
    return f"{stack.url}/portal/{tokens.issue(secret, grant)}"


def switch_portal(stack: Stack, browser: Browser, invite_url: str, *, on: bool) -> None:
    """The merchant's owner, in the dashboard's Settings."""
    owner = browser.new_context(viewport=DESKTOP).new_page()
    accept_invite(owner, invite_url)
    owner.goto(f"{stack.url}/dashboard/settings")
    owner.locator("#portal-heading").scroll_into_view_if_needed()
    owner.get_by_role("radio", name=re.compile("^On" if on else "^Off")).check()
    owner.get_by_role("button", name="Save portal").click()
    expect(owner.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    owner.context.close()


def here(stack: Stack, url: str) -> str:
    """A link from an email, on this stack (emails carry the stack's public address already)."""
    return stack.url + urlsplit(url).path


def walk_customer_pages(stack: Stack, page: Page, browser: Browser, visit: Visit) -> None:
    """A merchant's customers, each at a step of their refund; every customer page, once."""
    merchant = stack.merchant(name="Acme Software", owner_email=f"olive.{uuid.uuid4().hex[:6]}@acme.example")
    policy = {"process_time": "5–10 business days", "refund_window_days": 14}
    assert stack.api.put("/v1/refund-policy", headers=merchant["auth"], json=policy).is_success
    course = {"id": "prod_course", "name": "Video course: Design systems", "kind": "one_time", "category": "digital"}

    # Ada: the link in her email, the form, her request pending, then refunded.
    ada = stack.payment(merchant, customer_name="Ada Lovelace", amount=12_900, product=course)
    adas_link = here(stack, merchants_first_refund(stack, merchant, ada, 1_000))
    page.goto(adas_link)
    expect(page.get_by_role("heading", name="Request a refund")).to_be_visible()
    visit("portal-ask", page)
    ask_in_the_portal(page, "It does not work (a technical problem)", "Chapter 4's videos stop after a minute.")
    expect(request_status(page)).to_have_text("Pending")
    visit("portal-pending", page)
    [asked] = [r for r in stack.payment_refunds(merchant, ada) if r["channel"] == "portal"]
    assert stack.api.post(f"/v1/refunds/{asked['id']}/approve", headers=merchant["auth"]).is_success
    expect(request_status(page)).to_have_text("Succeeded", timeout=60_000)
    visit("portal-succeeded", page)

    # Grace: a subscription, cancelled at the period's end with no refund.
    grace = stack.subscription_payment(merchant, customer_name="Grace Hopper")
    page.goto(here(stack, merchants_first_refund(stack, merchant, grace, 500)))
    visit("portal-ask-subscription", page)  # keep it or cancel it: the customer's choice, nothing ticked
    ask_in_the_portal(page, "My subscription renewed unexpectedly", cancel=True)
    [renewal] = [r for r in stack.payment_refunds(merchant, grace) if r["channel"] == "portal"]
    decision = {
        "subscription_action": "cancel_only",
        "note_to_customer": "This month was used, so there is no refund; your plan will not renew.",
    }
    approve = stack.api.post(f"/v1/refunds/{renewal['id']}/approve", headers=merchant["auth"], json=decision)
    assert approve.is_success, approve.text
    expect(request_status(page)).to_have_text("Subscription cancelled", timeout=60_000)
    page.reload()  # the live status renews the request only; the payment's subscription line comes with the page
    expect(page.locator(".purchase-facts")).to_contain_text("Cancelled: access until")
    visit("portal-cancelled", page)

    # Alan: a consumable bought six weeks ago: outside the policy, and told honestly that he may still ask.
    kit = {"id": "prod_kit", "name": "Starter kit", "kind": "one_time", "category": "consumable"}
    old = (datetime.now(UTC) - timedelta(days=41)).isoformat()
    alan = stack.payment(merchant, customer_name="Alan Turing", amount=2_500, product=kit, paid_at=old)
    page.goto(here(stack, merchants_first_refund(stack, merchant, alan, 300)))
    expect(page.locator("#outside-policy")).to_contain_text("You can still ask")
    visit("portal-outside-policy", page)

    page.goto(expired_link(stack, merchant["id"], ada["id"]))
    visit("portal-link-expired", page)
    page.goto(f"{stack.url}/portal/pt_not-a-real-link.x")
    visit("portal-link-not-working", page)

    page.goto(f"{stack.url}/policy/{merchant['id']}")
    visit("policy", page)
    page.goto(f"{stack.url}/policy/{merchant['id']}/embed")
    visit("policy-embed", page)

    switch_portal(stack, browser, merchant["owner_invite_url"], on=False)
    page.goto(adas_link)
    expect(page.get_by_role("heading", name="Online refund requests are closed")).to_be_visible()
    visit("portal-closed", page)
