"""What each event tells the customer (the notifier's pure rules), and that every email renders from its templates
in both forms, naming the merchant and carrying the link to the portal page when there is one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from refundflow_notifier.customer_contacts import Contact, CustomerLink, link_for
from refundflow_notifier.customer_emails import STEP_IN_THE_REFUND, CustomerEmail, customer_email
from refundflow_notifier.email_messages import render
from refundflow_notifier.email_previews import previews
from refundflow_notifier.notification_rules import MerchantPreferences
from refundflow_shared.events import (
    EventData,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReversed,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
)
from refundflow_shared.secret_box import SecretBox, generate_key

PREFS = MerchantPreferences(review_target="within 2 business days")
CONTACT = Contact(customer_email="ada@example.com", merchant_name="Acme Software", process_time="3 business days")
LINK = CustomerLink(url="https://refunds.example/portal/pt_x", until=datetime(2026, 12, 3, tzinfo=UTC))
IDS: dict[str, Any] = {"merchant_id": "m", "payment_id": "p", "refund_id": "r", "customer_email": "ada@example.com"}
AT = datetime(2026, 12, 24, 10, tzinfo=UTC)


def email(data: EventData, contact: Contact = CONTACT, link: CustomerLink = LINK) -> CustomerEmail | None:
    return customer_email(data, PREFS, contact, link)


def requested(channel: str | None, auto_approved: bool = False) -> RefundRequested:
    return RefundRequested(
        **IDS, amount=4_999, currency="EUR", reason="duplicate", channel=channel, auto_approved=auto_approved
    )


@pytest.mark.parametrize(
    ("channel", "auto_approved", "acknowledged"),
    [
        ("portal", False, True),  # the customer asked in the portal
        ("command", False, True),  # a platform service asked for them (refund.submit)
        ("api", False, False),  # the merchant made it: nothing was received from the customer
        ("portal", True, False),  # approved as it was made: the approval says it all
        (None, False, False),  # an event from before channels were told: not known to be the customer's
    ],
)
def test_received_is_said_only_for_a_request_the_customer_made_and_a_person_will_decide(
    channel: str | None, auto_approved: bool, acknowledged: bool
) -> None:
    sent = email(requested(channel, auto_approved))
    assert (sent is not None) is acknowledged
    if sent is not None:
        assert sent.content.subject == "We received your refund request for €49.99"
        assert sent.content.context["review_target"] == "within 2 business days"


def test_an_approval_tells_the_amount_what_was_asked_when_less_and_the_note_to_the_customer() -> None:
    common = {**IDS, "currency": "EUR", "provider_payment_id": "pi", "payment_amount": 4_999, "approved_by": "user:u"}
    partly = email(
        RefundApproved(**common, amount=2_500, requested_amount=4_999, note_to_customer="The outage lasted 3 days.")
    )
    whole = email(RefundApproved(**common, amount=4_999))
    assert partly is not None and whole is not None
    assert partly.content.subject == "Your refund of €25.00 is approved"
    text, html = render(partly.content)
    assert "You asked for €49.99: Acme Software approved €25.00 of it." in text
    assert "Their note: The outage lasted 3 days." in text and "The outage lasted 3 days." in html
    assert "You asked for" not in render(whole.content)[0]


def test_a_refund_sent_tells_the_policys_process_time_or_no_number_when_intake_never_said_it() -> None:
    succeeded = RefundSucceeded(**IDS, amount=2_500, currency="EUR", provider_refund_id="re_1")
    told = email(succeeded)
    unknown = email(succeeded, Contact(customer_email="ada@example.com"))
    assert told is not None and unknown is not None
    assert "appears on your statement within 3 business days" in render(told.content)[0]
    carried = email(succeeded.model_copy(update={"process_time": "2 business days"}))
    assert carried is not None and "within 2 business days" in render(carried.content)[0], "the event's own first"
    assert "it can take a few business days" in render(unknown.content)[0]
    assert "The merchant has refunded" in render(unknown.content)[0]


def test_a_cancel_only_decision_is_not_mailed_as_a_rejection_but_as_the_cancellation_with_its_note() -> None:
    assert email(RefundRejected(**IDS, note="Used for months", cancel_only=True)) is None
    # Cancelled, or asked to be, already: no cancellation follows, so the decision itself is told, with its note.
    no_cancellation = RefundRejected(
        **IDS, note="Used for months", cancel_only=True, cancellation_follows=False, channel="portal"
    )
    told = email(no_cancellation)
    assert told is not None and "Their note: Used for months" in render(told.content)[0]
    rejection = email(RefundRejected(**IDS, note="Used for months"))
    assert rejection is not None and "Their note: Used for months" in render(rejection.content)[0]

    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    at_end = SubscriptionCanceled(
        **ids,
        subscription_id="sub_1",
        at_period_end=True,
        ends_at=AT,
        note_to_customer="You keep everything until then.",
    )
    cancelled = email(at_end)
    assert cancelled is not None and cancelled.recipient == "ada@example.com", "the address intake gave earlier"
    text = render(cancelled.content)[0]
    assert "You keep access until 24 December 2026" in text and "No refund was made" in text
    assert "Their note: You keep everything until then." in text
    now = SubscriptionCanceled(**ids, subscription_id="sub_1", at_period_end=False, ends_at=AT)
    assert "as of today: you will not be charged again" in render(email(now).content)[0]  # type: ignore[union-attr]
    assert email(at_end, Contact()) is None, "no address known: no email"


def test_a_refused_cancel_is_told_only_when_the_provider_refused_it() -> None:
    """The processor carries the request's words to the customer when the provider refused the cancel; one it
    refused before any call (naming a subscription not of its payment) carries none, and is the team's alone, even
    where the notifier knows the payment's customer."""
    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    refused = {**ids, "subscription_id": "sub_1", "at_period_end": True, "reason": "No such subscription"}
    told = email(SubscriptionCancelFailed(**refused, customer_email="ada@example.com", no_refund=True))
    assert told is not None and told.recipient == "ada@example.com"
    assert told.content.subject == "Your subscription is not cancelled yet"
    text = render(told.content)[0]
    assert "No refund was made for your request." in text and "No such subscription" not in text
    assert email(SubscriptionCancelFailed(**refused)) is None


def test_a_cancel_only_on_a_subscription_that_had_ended_says_no_refund_and_when_it_ended() -> None:
    """The provider had ended it already (dunning, say): the cancellation comes at_period_end False. The email said
    it was cancelled "as of today" and never that no refund was made (the rejection waits for this email)."""
    rejection = RefundRejected(**IDS, note="We don't refund renewals", cancel_only=True, cancellation_follows=True)
    assert email(rejection) is None, "told by the cancellation"
    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    ended = SubscriptionCanceled(
        **ids, subscription_id="sub_1", at_period_end=False, ends_at=AT, no_refund=True, already_ended=True
    )
    cancelled = email(ended)
    assert cancelled is not None
    for said in render(cancelled.content):
        assert "No refund was made" in said and "as of today" not in said and "keep access" not in said
    assert "had already ended on 24 December 2026: you will not be charged again" in render(cancelled.content)[0]
    assert "had already ended on <strong>24 December 2026</strong>" in render(cancelled.content)[1]
    unknown_end = ended.model_copy(update={"ends_at": None})
    text = render(email(unknown_end).content)[0]  # type: ignore[union-attr]
    assert "had already ended: you will not be charged again" in text and "No refund was made" in text


def test_an_extension_says_by_how_many_days_and_when_the_next_payment_is_due() -> None:
    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    extended = email(SubscriptionExtended(**ids, subscription_id="sub_1", days=7, current_period_end=AT))
    assert extended is not None and extended.content.subject == "Your subscription is extended by 7 days"
    assert "Your next payment is now due on 24 December 2026." in render(extended.content)[0]


def test_an_extension_of_one_day_says_one_day() -> None:
    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    extended = email(SubscriptionExtended(**ids, subscription_id="sub_1", days=1, current_period_end=AT))
    assert extended is not None and extended.content.subject == "Your subscription is extended by 1 day"
    text, html = render(extended.content)
    assert "by 1 day," in text and "1 days" not in text and "1 days" not in html


def test_a_note_of_several_lines_keeps_its_lines_in_the_html_email() -> None:
    note = "Thank you for your patience.\nThe outage <lasted> 3 days."
    common = {**IDS, "currency": "EUR", "provider_payment_id": "pi", "payment_amount": 4_999, "approved_by": "user:u"}
    ids = {k: v for k, v in IDS.items() if k != "customer_email"}
    for data in (
        RefundApproved(**common, amount=2_500, note_to_customer=note),
        RefundRejected(**IDS, note=note),
        SubscriptionCanceled(**ids, subscription_id="s", at_period_end=True, ends_at=AT, note_to_customer=note),
    ):
        sent = email(data)
        assert sent is not None
        html = render(sent.content)[1]
        assert "Thank you for your patience.<br>\nThe outage &lt;lasted&gt; 3 days." in html, html


def test_a_decision_that_keeps_the_subscription_the_customer_asked_to_cancel_says_it_continues() -> None:
    common = {**IDS, "currency": "EUR", "provider_payment_id": "pi", "payment_amount": 4_999, "approved_by": "user:u"}
    for data in (
        RefundApproved(**common, amount=2_500, channel="portal", subscription_continues=True),
        RefundRejected(**IDS, note="No", channel="portal", subscription_continues=True),
    ):
        sent = email(data)
        assert sent is not None
        for part in render(sent.content):
            assert "You also asked to cancel your subscription: it continues, and renews as usual." in part, part
    plain = email(RefundApproved(**common, amount=2_500, channel="portal"))
    assert plain is not None and "your subscription" not in render(plain.content)[0]


def test_a_failure_and_a_reversal_say_what_happens_next_without_provider_internals() -> None:
    failed = email(RefundFailed(**IDS, amount=100, currency="EUR", failure_reason="provider_declined"))
    reversed_ = email(
        RefundReversed(
            **IDS, amount=100, currency="EUR", provider_refund_id="re_1", failure_reason="insufficient_funds"
        )
    )
    assert failed is not None and reversed_ is not None
    assert "What happens next: Acme Software has been told" in render(failed.content)[0]
    assert "provider_declined" not in str(failed.content.context)
    assert reversed_.content.context["why"] == "the payment provider could not complete it"


def test_a_link_is_given_while_it_works_and_an_expired_one_is_said_to_be_expired() -> None:
    box = SecretBox(generate_key())
    now = datetime(2026, 11, 26, tzinfo=UTC)
    sealed = box.seal("https://refunds.example/portal/pt_1", context="pay_1")
    fresh = Contact(sealed_portal_url=sealed, portal_url_expires_at=now + timedelta(days=3))
    stale = Contact(sealed_portal_url=sealed, portal_url_expires_at=now + timedelta(minutes=30))
    assert link_for(fresh, box, "pay_1", now).url == "https://refunds.example/portal/pt_1"
    assert link_for(fresh, box, "pay_other", now).url is None, "a link opens only for its own payment"
    assert link_for(stale, box, "pay_1", now) == CustomerLink(expired=True)
    assert link_for(Contact(), box, "pay_1", now) == CustomerLink()
    expired = email(
        RefundFailed(**IDS, amount=100, currency="EUR", failure_reason="x"), link=CustomerLink(expired=True)
    )
    assert expired is not None and "The link in our earlier emails has expired" in render(expired.content)[0]


def test_every_customer_email_renders_as_text_and_html_with_the_merchant_and_the_link() -> None:
    shown = previews(PREFS, merchant_name="Acme <Software>", process_time="5–10 business days", portal_url=LINK.url)
    assert sorted(p["kind"] for p in shown) == sorted(STEP_IN_THE_REFUND), "every kind, once"
    for preview in shown:
        assert "Acme <Software>" in preview["text"] and "Acme &lt;Software&gt;" in preview["html"], preview["kind"]
        assert LINK.url in preview["text"] and f'href="{LINK.url}"' in preview["html"], preview["kind"]
        assert "Acme <Software>" not in preview["html"], "escaped in HTML"
