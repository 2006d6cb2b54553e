"""Every customer email, through the whole system (intake, processor, notifier and the provider sandbox as
processes, the SMTP sink writing .eml files): one message per event, the right words for each case, the merchant's
name, and the link in each email opens the customer's page."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.stack import Stack, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
_LINK = re.compile(r"(https?://\S+/portal/pt_[A-Za-z0-9_.-]+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("emails"), postgres_url, kafka_bootstrap) as running:
        yield running


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def mails(stack: Stack, to: str, subjects: list[str], timeout: float = 90) -> dict[str, EmailMessage]:
    """The customer's emails once each subject has arrived, by subject; exactly one per subject."""

    def arrived() -> list[EmailMessage] | None:
        found = stack.mails_to(to)
        return found if {str(m["Subject"]) for m in found} >= set(subjects) else None

    found = wait_for(arrived, timeout=timeout, what=f"the emails {subjects} to {to}")
    by_subject = {str(m["Subject"]): m for m in found}
    assert len(by_subject) == len(found), f"one message per event: {[m['Subject'] for m in found]}"
    return by_subject


def the_page_behind(stack: Stack, message: EmailMessage, showing: str = "") -> str:
    """Follow the email's link, as the customer would: the page it opens, in words, once it shows ``showing``
    (intake hears of an outcome on its own, maybe a moment after the notifier mailed it)."""
    found = _LINK.search(text_of(message))
    assert found, "every customer email carries the link to the payment's page"
    assert found.group(1) in html_of(message)
    deadline = time.monotonic() + 30
    while True:
        page = httpx.get(stack.url + urlsplit(found.group(1)).path, timeout=20)
        assert page.status_code == 200, page.text[:300]
        words = " ".join(unescape(re.sub(r"<[^>]+>", " ", page.text)).split())
        if showing in words or time.monotonic() > deadline:
            return words
        time.sleep(0.2)


def customer_asks(stack: Stack, merchant: dict[str, Any], payment: dict[str, Any], **body: Any) -> dict[str, Any]:
    """The customer, through their portal link: the portal's own API with the link's token."""
    link = stack.api.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant["auth"])
    assert link.status_code == 201, link.text
    headers = {"Authorization": f"Bearer {link.json()['token']}"}
    asked = stack.api.post("/v1/portal/refund-requests", headers=headers, json=body)
    assert asked.status_code == 201, asked.text
    request: dict[str, Any] = asked.json()
    return request


def approve(stack: Stack, merchant: dict[str, Any], refund_id: str, **body: Any) -> None:
    answer = stack.api.post(f"/v1/refunds/{refund_id}/approve", headers=merchant["auth"], json=body)
    assert answer.status_code == 200, answer.text


def test_a_customers_request_is_received_approved_for_less_with_the_reason_and_refunded_in_the_policys_time(
    stack: Stack,
) -> None:
    merchant = stack.merchant(name="Acme Software")
    policy = stack.api.put("/v1/refund-policy", headers=merchant["auth"], json={"process_time": "3–5 business days"})
    assert policy.status_code == 200
    payment = stack.payment(merchant, amount=4_999)
    request = customer_asks(stack, merchant, payment, reason="technical_issue", message="The export crashes")
    approve(
        stack, merchant, request["id"], amount=2_500, note_to_customer="Export works in the web app; we refund half."
    )

    received, approved, refunded = (
        "We received your refund request for €49.99",
        "Your refund of €25.00 is approved",
        "Your refund of €25.00 is on its way",
    )
    got = mails(stack, payment["customer_email"], [received, approved, refunded])

    assert "Acme Software has received your request for a refund of €49.99" in text_of(got[received])
    assert "You asked for €49.99: Acme Software approved €25.00 of it." in text_of(got[approved])
    assert "Their note: Export works in the web app; we refund half." in text_of(got[approved])
    assert "within 3–5 business days" in text_of(got[refunded]), "the policy's process time, one source"
    for message in got.values():
        assert message["From"].addresses[0].display_name == "Acme Software via Refundflow"
    page = the_page_behind(stack, got[refunded], showing="€25.00 was refunded")
    assert "Your purchase from Acme Software" in page and "€25.00 was refunded" in page
    assert "within 3–5 business days" in page


def test_nothing_is_said_received_for_a_refund_the_merchant_made_or_its_rules_approved_at_once(stack: Stack) -> None:
    merchant = stack.merchant(name="Bolt Tools")
    rule = {"auto_approve": {"max_amount": {"amount": 5_000, "currency": "EUR"}, "reasons": ["duplicate"]}}
    assert stack.api.put("/v1/refund-policy", headers=merchant["auth"], json=rule).status_code == 200
    by_merchant, auto = stack.payment(merchant, amount=1_500), stack.payment(merchant, amount=2_000)
    made = stack.request_refund(merchant, by_merchant)  # the merchant's own refund, through its API
    approve(stack, merchant, made["id"])
    asked = customer_asks(stack, merchant, auto, reason="duplicate")
    assert asked["status"] == "processing", "approved by the rule as it was made"

    for payment, amount in ((by_merchant, "€15.00"), (auto, "€20.00")):
        approved, refunded = f"Your refund of {amount} is approved", f"Your refund of {amount} is on its way"
        got = mails(stack, payment["customer_email"], [approved, refunded])
        assert set(got) == {approved, refunded}, "no 'we received your request'"
        assert "Bolt Tools approved a refund of" in text_of(got[approved])
        assert "You asked for" not in text_of(got[approved])


def test_a_rejection_a_failure_and_a_reversal_each_say_what_happened_and_what_happens_next(stack: Stack) -> None:
    merchant = stack.merchant(name="Acme Software")
    rejected = stack.payment(merchant)
    # The merchant's balance ran short at the provider: the customer is told no such internals.
    failing = stack.payment(merchant, provider_payment_id=f"pi_fail_insufficient_funds_{uuid.uuid4().hex[:10]}")
    reversing = stack.payment(merchant, provider_payment_id=f"pi_late_failure_{uuid.uuid4().hex[:10]}")
    request = customer_asks(stack, merchant, rejected, reason="requested_by_customer")
    note = "The licence key was activated on three devices."
    assert stack.api.post(
        f"/v1/refunds/{request['id']}/reject", headers=merchant["auth"], json={"note": note}
    ).is_success
    for payment in (failing, reversing):
        approve(stack, merchant, stack.request_refund(merchant, payment)["id"])

    got = mails(
        stack, rejected["customer_email"], ["We received your refund request for €49.99", "About your refund request"]
    )
    assert f"Their note: {note}" in text_of(got["About your refund request"])
    assert note in the_page_behind(stack, got["About your refund request"])
    failed = mails(
        stack, failing["customer_email"], ["Your refund of €49.99 is approved", "A problem with your refund of €49.99"]
    )
    words = text_of(failed["A problem with your refund of €49.99"])
    assert "What happens next: Acme Software has been told and will follow up with you" in words
    assert "insufficient" not in words, "no provider internals"
    reversal = "Your refund of €49.99 could not be completed"
    back = mails(stack, reversing["customer_email"], ["Your refund of €49.99 is on its way", reversal])
    assert "the card it was sent to has expired or been cancelled" in text_of(back[reversal])
    assert "will contact you to refund you another way" in text_of(back[reversal])


def test_cancel_only_with_goodwill_days_tells_the_access_end_after_the_extension(stack: Stack) -> None:
    """The cancel and the extension run apart at the processor: the cancellation's email names the access end, so
    it must be the one the extension made, not the period's end before it."""
    merchant = stack.merchant(name="Acme Software")
    payment = stack.subscription_payment(merchant)
    asked = customer_asks(stack, merchant, payment, reason="unexpected_renewal", cancel_subscription=True)
    approve(stack, merchant, asked["id"], subscription_action="cancel_only", extend_days=7)

    cancelled, extended = "Your subscription is cancelled", "Your subscription is extended by 7 days"
    got = mails(stack, payment["customer_email"], [cancelled, extended])
    access_end = datetime.fromisoformat(payment["subscription"]["current_period_end"]) + timedelta(days=7)
    on = f"{access_end.day} {access_end.strftime('%B %Y')}"
    assert f"You keep access until {on}," in text_of(got[cancelled])
    # The extension is the last period: no payment follows it.
    assert "next payment" not in text_of(got[extended])
    assert f"Your access now lasts until {on}, when your subscription ends with no further payment." in text_of(
        got[extended]
    )


def test_subscription_decisions_tell_the_cancellation_with_its_access_end_and_the_extension_by_its_days(
    stack: Stack,
) -> None:
    merchant = stack.merchant(name="Acme Software")
    kept, ended, extended = (stack.subscription_payment(merchant) for _ in range(3))
    cancel_only = customer_asks(stack, merchant, kept, reason="unexpected_renewal", cancel_subscription=True)
    approve(
        stack,
        merchant,
        cancel_only["id"],
        subscription_action="cancel_only",
        note="used all month",
        note_to_customer="The month was used, so no refund; it will not renew.",
    )
    approve(stack, merchant, stack.request_refund(merchant, ended)["id"])  # refund and cancel, the default
    goodwill = customer_asks(stack, merchant, extended, amount=1_000, reason="service_disruption")
    approve(stack, merchant, goodwill["id"], subscription_action="refund_only", extend_days=7)

    cancelled = "Your subscription is cancelled"
    only = mails(stack, kept["customer_email"], ["We received your refund request for €30.00", cancelled])
    words = text_of(only[cancelled])
    assert "Acme Software has cancelled your subscription. You keep access until" in words
    assert "No refund was made for your request." in words
    assert "Their note: The month was used, so no refund; it will not renew." in words
    assert "used all month" not in words and "About your refund request" not in only, "not mailed as a rejection"
    assert "Subscription cancelled" in the_page_behind(stack, only[cancelled], showing="Subscription cancelled")

    now = mails(stack, ended["customer_email"], ["Your refund of €30.00 is on its way", cancelled])
    assert "cancelled your subscription as of today" in text_of(now[cancelled])

    more = "Your subscription is extended by 7 days"
    got = mails(stack, extended["customer_email"], ["Your refund of €10.00 is on its way", more])
    due = datetime.fromisoformat(extended["subscription"]["current_period_end"]) + timedelta(days=7)
    assert f"Your next payment is now due on {due.day} {due.strftime('%B %Y')}." in text_of(got[more])
    assert "Subscription extended by 7 days" in the_page_behind(
        stack, got[more], showing="Subscription extended by 7 days"
    )
