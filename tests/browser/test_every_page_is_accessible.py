"""axe-core finds no serious or critical violation on any dashboard page, nor on the API reference; keyboard users
can skip to content."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.people import assert_accessible, serious_violations
from tests.browser.stack import Stack
from tests.browser.tour import walk_every_page

pytestmark = pytest.mark.slow


def test_every_page_passes_axe_with_no_serious_or_critical_violation(
    stack: Stack, page: Page, browser: Browser
) -> None:
    found: dict[str, list[dict[str, object]]] = {}
    seen: list[str] = []

    def check(name: str, current: Page) -> None:
        seen.append(name)
        if violations := serious_violations(current):
            found[name] = violations

    walk_every_page(stack, page, browser, check)
    assert len(seen) == 18
    assert found == {}


def test_the_keyboard_reaches_the_main_content_first_with_a_visible_focus(stack: Stack, page: Page) -> None:
    merchant = stack.merchant()
    page.goto(merchant["owner_invite_url"])
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.id")
    assert focused == "display_name"  # the sign-up form's first field, then the rest in order
    from tests.browser.people import accept_invite

    accept_invite(page, merchant["owner_invite_url"])
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # into the page: the payments search, not the sidebar
    assert page.evaluate("document.activeElement.id") == "q"


def test_the_api_reference_loads_nothing_from_elsewhere_and_passes_axe(stack: Stack, page: Page) -> None:
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"{stack.url}/docs")
    expect(page.get_by_role("heading", name="POST /v1/refunds/{refund_id}/approve")).to_be_visible()
    approve = page.get_by_role("article", name="POST /v1/refunds/{refund_id}/approve")
    expect(approve.get_by_role("table", name="Responses of POST /v1/refunds/{refund_id}/approve")).to_contain_text(
        "second_approval_needs_a_person"
    )
    approve.get_by_role("link", name="RefundOut").first.click()  # the answer's fields, further down the page
    expect(page.get_by_role("heading", name="RefundOut", exact=True)).to_be_in_viewport()
    assert [url for url in asked if not url.startswith(stack.url)] == []
    table = approve.get_by_role("table").first
    assert table.evaluate("t => getComputedStyle(t).borderCollapse") == "collapse", "the page's style, allowed by CSP"
    assert_accessible(page)
