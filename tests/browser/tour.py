"""A merchant with a realistic few weeks of business, and a walk through every dashboard page: the accessibility
test checks each page with axe-core, `make screenshots` photographs each one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.browser.people import accept_invite, invite, sign_out
from tests.browser.stack import Stack
from tests.support.waiting import wait_for

Visit = Callable[[str, Page], None]
_CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.net"),
    ("Alan Turing", "alan@example.org"),
    ("Katherine Johnson", "katherine@example.com"),
    ("Edsger Dijkstra", "edsger@example.nl"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Donald Knuth", "don@example.edu"),
    ("Margaret Hamilton", "margaret@example.com"),
]


def _product(i: int) -> dict[str, Any]:
    return [
        {"id": "prod_ebook", "name": "Design e-book", "kind": "one_time", "category": "digital"},
        {"id": "prod_course", "name": "Video course", "kind": "one_time", "category": "digital"},
        {"id": "prod_kit", "name": "Starter kit", "kind": "one_time", "category": "consumable"},
    ][i % 3]


def business(stack: Stack, merchant: dict[str, Any]) -> dict[str, Any]:
    """Payments over eight weeks, refunds decided and pending; returns the refunds worth opening."""
    now = datetime.now(UTC)
    amounts = [4_999, 12_900, 2_500, 8_900, 19_900, 3_499, 6_500, 15_000]
    paid = []
    for i in range(16):
        name, email = _CUSTOMERS[i % len(_CUSTOMERS)]
        paid.append(
            stack.payment(
                merchant,
                customer_name=name,
                customer_email=email,
                amount=amounts[i % len(amounts)],
                paid_at=(now - timedelta(days=3 + 3 * i, hours=i)).isoformat(),
                product=_product(i),
            )
        )
    for i in range(3):
        name, email = _CUSTOMERS[(i + 3) % len(_CUSTOMERS)]
        paid.append(stack.subscription_payment(merchant, customer_name=name, customer_email=email))
    reasons = ["product_not_as_described", "technical_issue", "duplicate", "requested_by_customer"]
    decided = [stack.request_refund(merchant, paid[i], reason=reasons[i % 4]) for i in (1, 4, 6, 9)]
    for refund in decided[:3]:
        stack.api.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant["auth"])
    stack.api.post(f"/v1/refunds/{decided[3]['id']}/reject", headers=merchant["auth"], json={"note": "Used"})
    pending = [
        stack.request_refund(merchant, paid[0], reason="product_not_as_described"),
        stack.request_refund(
            merchant, paid[14], reason="other", reason_details="Bought the wrong edition; never opened it."
        ),  # 40 days after purchase and a consumable: flagged, in the policy's words
        stack.request_refund(merchant, paid[16], reason="unexpected_renewal"),
        stack.request_refund(merchant, paid[3], amount=2_000, reason="technical_issue"),
    ]
    wait_for(
        lambda: all(stack.refund(merchant, r["id"])["status"] == "succeeded" for r in decided[:3]),
        what="the approved refunds to succeed",
    )
    return {"pending": pending, "succeeded": decided[0]}


def walk_every_page(stack: Stack, page: Page, browser: Browser, visit: Visit) -> None:
    """Signed out, then as a new owner of a merchant with a few weeks of business: every page, once."""
    merchant = stack.merchant(name="Acme Software", owner_email=f"olive.{uuid.uuid4().hex[:6]}@acme.example")
    page.goto(merchant["owner_invite_url"])
    visit("invite", page)
    # A product with rules of its own, one of them off: the policy page's overrides table is walked too. The key
    # sets its approval rules before the owner joins (from then on they are the owners').
    two_people = {"amount": 20_000, "currency": "EUR"}
    gift = {"refund_window_days": 30, "auto_approve": None, "second_approval_above": two_people}
    assert stack.api.put("/v1/refund-policy/products/prod_gift", headers=merchant["auth"], json=gift).status_code == 200
    accept_invite(page, merchant["owner_invite_url"], name="Olive Owner")
    hook = {"url": "http://127.0.0.1:9/acme/refund-events", "events": ["refund.succeeded", "refund.requested"]}
    assert stack.api.post("/v1/webhook-endpoints", headers=merchant["auth"], json=hook).status_code == 201
    refunds = business(stack, merchant)
    base = f"{stack.url}/dashboard"

    for name, path in (
        ("payments", "/payments"),
        ("payments-with-requests", "/payments?with_requests=true"),
        ("refunds", "/refunds"),
        ("refund", f"/refunds/{refunds['pending'][1]['id']}"),
        ("refund-subscription", f"/refunds/{refunds['pending'][2]['id']}"),
        ("payment-subscription", f"/payments/{refunds['pending'][2]['payment_id']}"),
        ("refund-succeeded", f"/refunds/{refunds['succeeded']['id']}"),
        ("balance", "/balance"),
        ("insights", "/insights"),
        ("refund-policy", "/refund-policy"),
        ("settings", "/settings"),
        ("not-found", "/refunds/ref_not_yours"),
    ):
        page.goto(base + path)
        visit(name, page)

    page.goto(f"{base}/webhooks")
    page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/refundflow/webhooks")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#new-secret")).to_be_visible()
    visit("webhooks", page)
    page.goto(f"{base}/webhooks")
    page.get_by_role("link", name="Delivery log").first.click()
    visit("webhook-deliveries", page)

    invite(page, stack.url, f"arno.{uuid.uuid4().hex[:6]}@acme.example", "approver")
    visit("team", page)

    sign_out(page)
    visit("login", page)
    page.goto(f"{base}/forgot-password")
    visit("forgot-password", page)
