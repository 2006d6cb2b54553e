"""The customer portal in a real browser, against the whole system: the customer opens the link from their email
(read at the SMTP sink), asks for a refund and watches it move live; rejections, cancellations, links that do not
work and a portal switched off answer as they should; every customer page passes axe."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.customer_tour import (
    ask_in_the_portal,
    email_link,
    expired_link,
    here,
    merchants_first_refund,
    portal_link,
    request_status,
    switch_portal,
    walk_customer_pages,
)
from tests.browser.people import accept_invite, assert_accessible, serious_violations
from tests.browser.stack import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_every_customer_page_passes_axe_with_no_serious_or_critical_violation(
    stack: Stack, page: Page, browser: Browser
) -> None:
    found: dict[str, list[dict[str, object]]] = {}
    seen: list[str] = []

    def check(name: str, current: Page) -> None:
        seen.append(name)
        if violations := serious_violations(current):
            found[name] = violations

    walk_customer_pages(stack, page, browser, check)
    assert len(seen) == 11
    assert found == {}


def test_a_customer_opens_the_link_from_their_email_asks_with_the_keyboard_and_watches_it_succeed_live(
    stack: Stack, page: Page
) -> None:
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant, amount=4_999)
    page.goto(here(stack, merchants_first_refund(stack, merchant, payment, 999)))
    expect(page.locator(".window")).to_contain_text("you are within the 14-day refund window")

    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    page.keyboard.press("Enter")
    page.get_by_label("Why are you asking?").focus()
    page.keyboard.press("ArrowDown")  # the first reason the policy accepts
    page.keyboard.press("Tab")
    page.keyboard.type("It stopped working after the update.")
    page.keyboard.press("Tab")  # the amount: left empty, everything that is left
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Request a refund")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_role("status").filter(has_text="your request is sent")).to_be_visible()
    expect(request_status(page)).to_have_text("Pending")
    expect(page.locator("article.request")).to_contain_text("You asked for a refund of €40.00")
    refunded_so_far = page.locator("dt:text-is('Refunded so far') + dd")
    expect(refunded_so_far).to_have_text("€9.99")  # the merchant's own refund
    page.evaluate("window.stillTheSamePage = true")
    [asked] = [r for r in stack.payment_refunds(merchant, payment) if r["channel"] == "portal"]
    assert stack.api.post(f"/v1/refunds/{asked['id']}/approve", headers=merchant["auth"]).is_success

    expect(request_status(page)).to_have_text("Succeeded", timeout=60_000)  # live, by polling: no reload
    expect(refunded_so_far).to_have_text("€49.99")  # the payment's total with it
    assert page.evaluate("window.stillTheSamePage") is True
    expect(page.locator("article.request")).to_contain_text("appears on your statement within 5–10 business days")
    expect(page.locator("#live-status")).to_have_text("Your request is now: Succeeded.")
    assert_accessible(page)


def test_a_page_whose_link_stopped_working_stops_asking_for_its_requests_status(stack: Stack, page: Page) -> None:
    """Once the link expires, the status answers 401 for good: asking again every 8 s for as long as the tab stays
    open helps no one."""
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant)
    polls: list[str] = []

    def expired(route: Route) -> None:  # as intake answers once the link has expired
        polls.append(route.request.url)
        body = {"error": {"code": "portal_token_expired", "message": "this link has expired"}}
        route.fulfill(status=401, json=body)

    page.route("**/requests/*/status", expired)
    page.goto(here(stack, merchants_first_refund(stack, merchant, payment, 100)))
    ask_in_the_portal(page, "I changed my mind")
    for _ in range(100):  # the first poll, 1.5 s after the page loaded (Playwright's calls let the route answer)
        if polls:
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(6_000)  # the polls came 1.5 s apart, then slower: three or more in that time

    assert len(polls) == 1
    expect(page.locator("#live-status")).to_contain_text("no longer updates")
    stopped = "This page no longer updates by itself: open the latest link from your email."
    expect(page.locator("article.request .request-summary")).to_contain_text(stopped)  # what everyone sees
    expect(page.get_by_text("This page updates by itself.")).to_have_count(0)
    expect(page.locator("article.request .spinner")).to_have_count(0)


def test_without_javascript_a_request_in_progress_asks_for_a_reload_instead_of_promising_updates(
    stack: Stack, browser: Browser
) -> None:
    """Nothing updates a page without its script: it said "This page updates by itself", a spinner turning."""
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant)
    stack.customer_requests_refund(merchant, payment)
    context = browser.new_context(java_script_enabled=False, locale="en-GB", timezone_id="UTC")
    page = context.new_page()

    page.goto(here(stack, portal_link(stack, merchant, payment)))

    expect(request_status(page)).to_have_text("Pending")
    expect(page.locator("article.request .request-summary")).to_contain_text("Reload this page to see the latest.")
    expect(page.get_by_text("This page updates by itself.")).not_to_be_visible()
    expect(page.locator("article.request .spinner")).not_to_be_visible()
    context.close()


def test_a_long_link_in_the_customers_words_or_a_large_amount_keeps_the_page_within_a_phones_width(
    stack: Stack, page: Page
) -> None:
    """A link has no space to break at, nor has "¥1,234,567": on a phone, either made the page wider than the
    screen, the request's status off to the right."""
    merchant = stack.merchant(name="Acme Software")
    shared = (
        "https://drive.google.com/file/d/1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789/view?usp=sharing"
        "&resourcekey=0-AbCdEfGhIjKlMnOpQrStUv"
    )
    asked = here(stack, portal_link(stack, merchant, stack.payment(merchant)))
    page.goto(asked)
    ask_in_the_portal(page, "Something else (tell us below)", f"The file does not open, see the screenshot: {shared}")
    large = [
        here(stack, portal_link(stack, merchant, stack.payment(merchant, amount=1_234_567))),
        here(stack, portal_link(stack, merchant, stack.payment(merchant, amount=1_234_567, currency="JPY"))),
    ]

    wider = {}
    for width in (320, 375):
        page.set_viewport_size({"width": width, "height": 720})
        for link in (asked, *large):
            page.goto(link)
            if (scrolled := page.evaluate("document.documentElement.scrollWidth")) > width:
                wider[f"{width}px {page.locator('.amount-big').inner_text()}"] = scrolled
    assert wider == {}
    page.goto(asked)
    expect(request_status(page)).to_be_in_viewport()


def test_on_a_phone_a_mistake_in_the_form_puts_the_customer_on_its_field_and_once_sent_on_the_thank_you(
    stack: Stack, browser: Browser
) -> None:
    """The error was one block at the top, tied to no field, the focus left on the page; once sent, the page
    scrolled to the requests, past the "Thank you" above them, which, there from the start, was never announced."""
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant)
    context = browser.new_context(viewport={"width": 375, "height": 667}, locale="en-GB", timezone_id="UTC")
    page = context.new_page()
    page.goto(here(stack, portal_link(stack, merchant, payment)))
    reason, amount = page.get_by_label("Why are you asking?"), page.get_by_label(re.compile("^Amount"))

    page.get_by_role("button", name="Request a refund").click()
    expect(reason).to_be_focused()
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(reason).to_have_accessible_description("Please choose the reason for your request.")
    expect(page.get_by_text("Please choose the reason for your request.")).to_be_in_viewport()

    reason.select_option(label="I changed my mind")
    amount.fill("0")
    page.get_by_role("button", name="Request a refund").click()
    expect(amount).to_be_focused()
    expect(amount).to_have_accessible_description(re.compile("^Enter an amount such as 12.50"))
    expect(reason).not_to_have_attribute("aria-invalid", "true")
    assert_accessible(page)

    amount.fill("")
    page.get_by_role("button", name="Request a refund").click()
    sent = page.get_by_role("status").filter(has_text="your request is sent")
    expect(sent).to_be_focused()  # what a screen reader reads out, where the page lands
    expect(sent).to_be_in_viewport()
    expect(page.locator("#your-requests")).to_be_in_viewport()
    context.close()


def test_a_rejection_shows_the_merchants_note_and_never_the_teams(stack: Stack, page: Page) -> None:
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant)
    page.goto(here(stack, merchants_first_refund(stack, merchant, payment, 500)))
    ask_in_the_portal(page, "I changed my mind", "I bought the wrong edition.")
    [asked] = [r for r in stack.payment_refunds(merchant, payment) if r["channel"] == "portal"]
    note = "Your licence was activated on three devices, so we cannot take it back."
    assert stack.api.post(f"/v1/refunds/{asked['id']}/reject", headers=merchant["auth"], json={"note": note}).is_success

    expect(request_status(page)).to_have_text("Rejected", timeout=30_000)
    expect(page.locator("article.request")).to_contain_text(note)
    expect(page.locator("article.request")).to_contain_text("Acme Software decided not to refund this request")
    expect(page.get_by_text("api_key")).to_have_count(0)


def test_cancel_only_decided_in_the_dashboard_shows_the_cancellation_and_until_when_access_lasts(
    stack: Stack, page: Page, browser: Browser
) -> None:
    merchant = stack.merchant(name="Acme Software")
    payment = stack.subscription_payment(merchant)
    page.goto(here(stack, merchants_first_refund(stack, merchant, payment, 300)))
    ask_in_the_portal(page, "My subscription renewed unexpectedly", cancel=True)
    [asked] = [r for r in stack.payment_refunds(merchant, payment) if r["channel"] == "portal"]

    owner = browser.new_context().new_page()
    accept_invite(owner, merchant["owner_invite_url"])
    owner.goto(f"{stack.url}/dashboard/refunds/{asked['id']}")
    expect(owner.get_by_text("The customer asked to cancel the subscription.")).to_be_visible()
    owner.get_by_role("radio", name=re.compile("^Cancel only")).check()
    owner.get_by_label(re.compile("^Message to the customer")).fill("The month was used; it will not renew.")
    owner.get_by_role("button", name="Approve refund").click()
    expect(owner.get_by_role("status").filter(has_text="no money moves")).to_be_visible()

    expect(request_status(page)).to_have_text("Subscription cancelled", timeout=30_000)
    # "until then" until the provider's cancel is recorded, then its date
    expect(page.locator("article.request")).to_contain_text("you keep access until")
    expect(page.locator("article.request")).to_contain_text("The month was used; it will not renew.")
    to = payment["customer_email"]
    link = email_link(stack, to, "Your subscription is cancelled")  # once the provider has cancelled it

    def noted() -> bool:
        return "subscription_canceled" in [t["action"] for t in stack.refund(merchant, asked["id"])["timeline"]]

    wait_for(noted, what="the provider's cancellation on the request's timeline")
    page.goto(here(stack, link))
    expect(page.locator("article.request")).to_contain_text("Subscription cancelled: access lasts until")
    assert not [m for m in stack.mails_to(to) if "About your refund request" in str(m["Subject"])]


def test_a_wish_to_cancel_that_the_decision_leaves_out_is_on_the_page_with_the_subscription_going_on(
    stack: Stack, page: Page
) -> None:
    """The customer chose "Cancel it too" and the merchant refunded only: the page showed the refund alone, never the
    wish, never that the subscription goes on and renews (only the email said so)."""
    merchant = stack.merchant(name="Acme Software")
    payment = stack.subscription_payment(merchant)
    page.goto(here(stack, portal_link(stack, merchant, payment)))
    ask_in_the_portal(page, "It does not work (a technical problem)", cancel=True)
    request = page.locator("article.request")
    expect(request).to_contain_text("You asked for a refund of €30.00 and to cancel your subscription")
    expect(request).not_to_contain_text("it continues")  # nothing is decided yet
    [asked] = [r for r in stack.payment_refunds(merchant, payment) if r["channel"] == "portal"]
    keep = {"subscription_action": "refund_only"}
    assert stack.api.post(f"/v1/refunds/{asked['id']}/approve", headers=merchant["auth"], json=keep).is_success

    expect(request_status(page)).to_have_text(re.compile("Processing|Succeeded"), timeout=30_000)
    continues = "You also asked to cancel your subscription: it continues, and renews as usual."
    expect(request.locator(".request-summary")).to_contain_text(continues)
    expect(request).to_contain_text("To cancel it, contact Acme Software.")


def test_an_expired_tampered_or_foreign_link_shows_nothing_private(stack: Stack, page: Page) -> None:
    merchant, stranger = stack.merchant(name="Acme Software"), stack.merchant(name="Other Shop")
    payment = stack.payment(merchant, product={"id": "p", "name": "Secret plan", "kind": "one_time"})
    theirs = stack.request_refund(stranger, stack.payment(stranger))
    link = here(stack, merchants_first_refund(stack, merchant, payment, 100))

    answers: list[Any] = []
    answers.append(page.goto(expired_link(stack, merchant["id"], payment["id"])))
    expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
    shown = [page.content()]
    payload, _, signature = link.rpartition("/")[2].partition(".")
    answers.append(page.goto(f"{stack.url}/portal/{payload[:-3]}abc.{signature}"))
    expect(page.get_by_role("heading", name="This link does not work")).to_be_visible()
    shown.append(page.content())
    answers.append(page.goto(f"{link}/requests/{theirs['id']}/status"))
    shown.append(page.content())

    assert [a.status for a in answers] == [410, 404, 404]
    for html in shown:
        assert "Secret plan" not in html and "Acme" not in html and theirs["id"] not in html.split("/status")[0]
        assert "€" not in html


def test_the_portal_switched_off_answers_links_and_requests_with_a_clear_page(
    stack: Stack, page: Page, browser: Browser
) -> None:
    merchant = stack.merchant(name="Acme Software")
    payment = stack.payment(merchant)
    link = here(stack, merchants_first_refund(stack, merchant, payment, 100))
    page.goto(link)  # the form, open in the customer's tab
    switch_portal(stack, browser, merchant["owner_invite_url"], on=False)

    page.get_by_label("Why are you asking?").select_option(label="I changed my mind")
    page.get_by_role("button", name="Request a refund").click()
    expect(page.get_by_role("heading", name="Online refund requests are closed")).to_be_visible()
    page.goto(link)
    expect(page.get_by_text("Acme Software does not take refund requests online at the moment.")).to_be_visible()
    expect(page.get_by_role("link", name="Read Acme Software's refund policy")).to_be_visible()
    assert_accessible(page)
    assert [r["channel"] for r in stack.payment_refunds(merchant, payment)] == ["api"]


def test_the_settings_page_previews_every_customer_email_as_text_and_as_html(stack: Stack, page: Page) -> None:
    merchant = stack.merchant(name="Acme Software")
    accept_invite(page, merchant["owner_invite_url"])
    page.goto(f"{stack.url}/dashboard/settings")
    received = page.locator("details").filter(has_text="We received your refund request")
    expect(received.locator("pre")).to_contain_text("Acme Software has received your request")
    html = received.frame_locator("iframe.email-html")
    expect(html.locator("body")).to_contain_text("Acme Software has received your request")
    approved = page.locator("details").filter(has_text="is approved")
    approved.locator("summary").click()
    expect(approved.frame_locator("iframe.email-html").locator("body")).to_contain_text("approved a refund")
