"""What a person does in the dashboard, step by step, as the browser tests and `make screenshots` drive it."""

from __future__ import annotations

import re
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.stack import PASSWORD

_axe = Axe()
BLOCKING = ("serious", "critical")


def accept_invite(page: Page, invite_url: str, *, name: str = "", password: str = PASSWORD) -> None:
    page.goto(invite_url)
    if name:
        page.get_by_label("Your name").fill(name)
    page.get_by_label(re.compile(r"^Password(?! again)")).fill(password)
    page.get_by_label("Password again").fill(password)
    page.get_by_role("button", name="Set password and sign in").click()
    expect(page.get_by_role("heading", name="Payments", exact=True)).to_be_visible()


def sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/dashboard/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Payments", exact=True)).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to your dashboard")).to_be_visible()


def open_refund_from_payments(page: Page, base_url: str, customer_email: str) -> None:
    """Payments → search the customer → their open request."""
    page.goto(f"{base_url}/dashboard/payments")
    page.get_by_label("Search").fill(customer_email)
    page.get_by_label("With refund requests").check()
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("link", name="Review request").first.click()
    expect(page.get_by_role("heading", name="The request")).to_be_visible()


def invite(page: Page, base_url: str, email: str, role: str) -> str:
    """The owner invites someone on the Team page; returns the link shown once."""
    page.goto(f"{base_url}/dashboard/team")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_role("button", name="Send invite").click()
    link = page.locator("#invite-url")
    expect(link).to_be_visible()
    return str(link.inner_text())


def status_badge(page: Page) -> Any:
    return page.locator("#status-badge")


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of impact serious or critical on the page as it is now."""
    results = _axe.run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in violations
        if v["impact"] in BLOCKING
    ]


def assert_accessible(page: Page) -> None:
    found = serious_violations(page)
    assert found == [], f"{page.url}: {found}"
