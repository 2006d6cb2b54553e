"""The dashboard's pages hold together for everyone: long text wraps instead of widening the page, the pages reflow
at 640 px (1280 px zoomed to 200%), live regions speak only when something changed, and what works only with
JavaScript is shown only with it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.people import accept_invite, assert_accessible, invite
from tests.browser.stack import Stack
from tests.browser.tour import walk_every_page

pytestmark = pytest.mark.slow
LONG_URL = "https://example.com/" + "a" * 150


def _owner(stack: Stack, page: Page) -> dict[str, Any]:
    merchant = stack.merchant()
    accept_invite(page, merchant["owner_invite_url"], name="Olive Owner")
    return merchant


def _page_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


@pytest.mark.parametrize("width", [1440, 375])
def test_a_refund_whose_details_hold_a_long_url_fits_the_window(stack: Stack, page: Page, width: int) -> None:
    """A 150-character URL made the refund page 1782 px wide at 1440 px: the Payment panel and the timeline were
    cut off."""
    merchant = _owner(stack, page)
    payment = stack.payment(merchant, customer_email="alexandra.konstantinopoulou@examplecorp.co.uk")
    refund = stack.request_refund(merchant, payment, reason="other", reason_details=f"See {LONG_URL} for the error")
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page.get_by_text(LONG_URL, exact=False).first).to_be_visible()
    assert _page_width(page) <= width


def test_a_processing_refund_leaves_its_live_status_alone_while_the_status_is_unchanged(
    stack: Stack, page: Page
) -> None:
    """Every poll rebuilt the badge inside the polite live region, so screen readers said "Processing" again and
    again. The page is held at processing: the status answers processing on every poll."""
    merchant = _owner(stack, page)
    refund = stack.request_refund(merchant, stack.payment(merchant))
    url = f"{stack.url}/dashboard/refunds/{refund['id']}"
    polls: list[str] = []

    def as_processing(route: Any) -> None:
        answer = route.fetch()
        body = answer.text().replace('data-status="pending"', 'data-status="processing"')
        route.fulfill(response=answer, body=body)

    def still_processing(route: Any) -> None:
        polls.append(route.request.url)
        timeline = '<ol class="timeline" id="timeline"></ol>'
        route.fulfill(json={"status": "processing", "label": "Processing", "final": False, "timeline_html": timeline})

    page.route(url, as_processing)
    page.route(f"{url}/status", still_processing)
    page.goto(url)
    page.evaluate(
        """() => { window.changes = []; new MutationObserver(found => window.changes.push(...found.map(m => m.type)))
        .observe(document.getElementById('refund-status'), {subtree: true, childList: true, characterData: true,
        attributes: true, attributeFilter: ['class']}); }"""
    )
    page.wait_for_timeout(4_500)
    assert len(polls) >= 2
    assert page.evaluate("window.changes") == []


@pytest.mark.parametrize("width", [640, 320])
def test_every_dashboard_page_reflows_at_640_and_320_pixels(
    stack: Stack, page: Page, browser: Browser, width: int
) -> None:
    """1280 px zoomed to 200%: the fixed sidebar and tables cut off inside their panels made Payments 1467 px wide,
    Team 1029, Settings 931. The sidebar goes on top; a wide table scrolls in its own panel. At 320 px (1280 px at
    400%) every page with a table still scrolled sideways (Payments by 268 px): the visually hidden words in its
    cells, positioned against the page rather than the panel, escaped the panel's scrolling."""
    page.set_viewport_size({"width": width, "height": 900})
    too_wide: dict[str, int] = {}
    seen: list[str] = []

    def check(name: str, current: Page) -> None:
        seen.append(name)
        beyond: int = current.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if beyond > 0:
            too_wide[name] = beyond

    walk_every_page(stack, page, browser, check)
    assert len(seen) == 18
    assert too_wide == {}


def test_an_endpoint_sent_every_event_keeps_its_delivery_log_link_whole(stack: Stack, page: Page) -> None:
    """With every event type listed, the events column squeezed the last one until "Delivery log" broke mid-word
    over three lines ("Deliv / ery / log")."""
    _owner(stack, page)
    page.goto(f"{stack.url}/dashboard/webhooks")
    page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/refundflow/webhooks")  # the tests allow local endpoints
    page.get_by_role("button", name="Add endpoint").click()  # every event type is ticked at first
    page.goto(f"{stack.url}/dashboard/webhooks")
    link = page.get_by_role("link", name="Delivery log").first
    expect(link).to_be_visible()
    assert link.evaluate("e => e.getClientRects().length") == 1  # one box: on one line


def test_the_policy_preview_is_not_read_aloud_after_every_typing_pause(stack: Stack, page: Page) -> None:
    """The preview was a polite live region: the whole policy text was read after each pause in typing."""
    _owner(stack, page)
    page.goto(f"{stack.url}/dashboard/refund-policy")
    preview = page.locator("#policy-preview")
    before = preview.inner_text()
    page.get_by_label(re.compile("^Refund window")).fill("21")
    expect(preview).not_to_have_text(before)
    assert preview.evaluate("e => e.closest('[aria-live]') === null")


def _contrast(first: str, second: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_sidebar_says_what_its_count_is_and_its_sign_out_focus_stands_out(stack: Stack, page: Page) -> None:
    """The count's aria-label, on a plain span, was not read; the Sign out button's focus ring was 2.65:1 on the
    dark sidebar."""
    merchant = _owner(stack, page)
    stack.request_refund(merchant, stack.payment(merchant))
    page.goto(f"{stack.url}/dashboard/balance")
    refunds = page.get_by_role("link", name=re.compile("^Refunds"))
    expect(refunds).to_have_text(re.compile(r"^\s*Refunds\s+1 pending\s*$"))  # in words, not in an aria-label
    page.locator(".sidebar nav a").last.focus()
    page.keyboard.press("Tab")
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_focused()
    ring = sign_out.evaluate("e => getComputedStyle(e).outlineColor")
    sidebar = page.locator(".sidebar").evaluate("e => getComputedStyle(e).backgroundColor")
    assert _contrast(ring, sidebar) >= 3


def test_the_proration_calculator_is_offered_only_where_it_works(stack: Stack, page: Page, browser: Browser) -> None:
    """Without JavaScript, Use prorated amount was shown and did nothing."""
    merchant = _owner(stack, page)
    refund = stack.request_refund(merchant, stack.subscription_payment(merchant), reason="service_disruption")
    url = f"{stack.url}/dashboard/refunds/{refund['id']}"
    page.goto(url)
    expect(page.get_by_role("button", name="Use prorated amount")).to_be_visible()
    without_js = browser.new_context(java_script_enabled=False, storage_state=page.context.storage_state())
    try:
        plain = without_js.new_page()
        plain.goto(url)
        expect(plain.get_by_role("button", name="Approve refund")).to_be_visible()
        expect(plain.get_by_role("button", name="Use prorated amount")).to_be_hidden()
    finally:
        without_js.close()


def _refused_at(page: Page, field_id: str, said: str | re.Pattern[str]) -> None:
    """The page came back refused: its title says so, the keyboard is on the field, which is marked invalid and
    described by the refusal's words."""
    expect(page).to_have_title(re.compile("^Error: "))
    field = page.locator(f"#{field_id}")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_accessible_description(said)
    assert_accessible(page)


def test_a_refused_amount_is_said_at_the_amount_field_and_the_keyboard_lands_on_it(stack: Stack, page: Page) -> None:
    """The refusal was one banner above the heading, tied to no field, and the focus on the page's body: a
    keyboard or screen-reader user heard nothing and had to search for what went wrong."""
    merchant = _owner(stack, page)
    refund = stack.request_refund(merchant, stack.payment(merchant))
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    page.get_by_label(re.compile("^Amount to refund")).fill("abc")
    page.keyboard.press("Enter")
    _refused_at(page, "amount", re.compile("'abc' is not an amount"))
    page.get_by_label(re.compile("^Amount to refund")).fill("99999")
    page.keyboard.press("Enter")
    _refused_at(page, "amount", re.compile("approve between"))


def test_the_other_dashboard_forms_say_a_refusal_at_its_field(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    base = f"{stack.url}/dashboard"
    no_browser_checks = "document.querySelectorAll('form').forEach(f => f.noValidate = true)"  # the server's answer
    for path, field_id, typed, said in (
        ("/team", "invite-email", "bad@@example.com", "That is not an email address."),
        ("/webhooks", "url", "ftp://example.com/hooks", re.compile("http")),
        ("/settings", "team_email", "not-an-email", re.compile("team email")),
    ):
        page.goto(base + path)
        page.evaluate(no_browser_checks)
        page.locator(f"#{field_id}").fill(typed)
        page.keyboard.press("Enter")
        _refused_at(page, field_id, said)

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Email").fill(merchant["owner_email"])
    page.get_by_label("Password").fill("not the password")
    page.keyboard.press("Enter")
    _refused_at(page, "password", "That email and password do not match an account.")
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")


def test_a_refusal_of_no_field_takes_the_focus_to_its_banner(stack: Stack, page: Page) -> None:
    merchant = _owner(stack, page)
    refund = stack.request_refund(merchant, stack.payment(merchant))
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    decided = stack.api.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant["auth"], json={})
    assert decided.status_code == 200  # by someone else while the page was open
    page.get_by_role("button", name="Reject request").click()
    expect(page).to_have_title(re.compile("^Error: "))
    expect(page.get_by_role("alert")).to_be_focused()
    expect(page.get_by_role("alert")).to_contain_text("Already decided")


def test_a_refund_pages_title_names_who_asked_and_how_much(stack: Stack, page: Page) -> None:
    """Every €49.99 refund page was titled "Refund €49.99 · Refundflow": tabs, history and a screen reader's list
    of windows could not tell one customer's from another's."""
    merchant = _owner(stack, page)
    payment = stack.payment(merchant, customer_name="Grace Hopper")
    refund = stack.request_refund(merchant, payment)
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page).to_have_title("Refund request from Grace Hopper – €49.99 · Refundflow")

    unnamed = stack.payment(merchant, customer_name=None)
    refund = stack.request_refund(merchant, unnamed)
    page.goto(f"{stack.url}/dashboard/refunds/{refund['id']}")
    expect(page).to_have_title(f"Refund request from {unnamed['customer_email']} – €49.99 · Refundflow")


def test_removing_a_team_member_is_asked_first_and_can_be_kept(stack: Stack, page: Page) -> None:
    """Remove, in the team's table, removed the person at once, one keypress away, with no way back (as Revoke
    did an API key, Delete a webhook endpoint and Remove a product's override)."""
    _owner(stack, page)
    email = f"arno.{uuid.uuid4().hex[:6]}@acme.example"
    invite(page, stack.url, email, "approver")
    page.goto(f"{stack.url}/dashboard/team")
    page.get_by_role("link", name=f"Remove {email}").focus()
    page.keyboard.press("Enter")
    question = f"Remove {email} from Acme Software?"
    expect(page.get_by_role("heading", name=question)).to_be_focused()
    expect(page).to_have_title(f"{question} · Refundflow")
    assert_accessible(page)

    page.get_by_role("link", name="Keep").click()
    expect(page).to_have_url(f"{stack.url}/dashboard/team")
    expect(page.get_by_role("link", name=f"Remove {email}")).to_be_visible()

    page.get_by_role("link", name=f"Remove {email}").click()
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_have_text("Removed.")
    expect(page.get_by_text(email)).to_have_count(0)
