"""Every customer email as a merchant's customer would get it, from sample events, rendered by the same rules and
templates as the real ones: the dashboard's Settings shows them (through the internal API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from refundflow_notifier.customer_contacts import Contact, CustomerLink
from refundflow_notifier.customer_emails import customer_email
from refundflow_notifier.email_messages import render
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

_IDS = {"merchant_id": "mer_preview", "payment_id": "pay_preview"}
_REFUND = {**_IDS, "refund_id": "ref_preview", "customer_email": "customer@example.com"}
_EUR = {**_REFUND, "currency": "EUR"}
_CANCEL_NOTE = "We cannot refund a period already used, but you keep everything until it ends."
# When each email goes out, as the merchant reads it.
WHEN = {
    "refund_requested": "When a customer asks, in the portal or through your platform (not for your own refunds,"
    " nor for those your rules approve at once)",
    "refund_approved": "When a refund is approved, by your team or your rules",
    "refund_succeeded": "When the payment provider has sent the money",
    "refund_rejected": "When you reject a request",
    "refund_failed": "When the payment provider could not make a refund",
    "refund_reversed": "When a refund that was sent failed afterwards",
    "subscription_canceled": "When the provider has cancelled a subscription (also for cancel-only decisions)",
    "subscription_cancel_failed": "When the provider refused to cancel a subscription (your team is alerted too)",
    "subscription_extended": "When the provider has extended a subscription's period",
}


def _samples(now: datetime) -> list[EventData]:
    return [
        RefundRequested(**_EUR, amount=4_999, reason="requested_by_customer", channel="portal"),
        RefundApproved(
            **_EUR,
            amount=2_500,
            requested_amount=4_999,
            provider_payment_id="pi_preview",
            payment_amount=4_999,
            approved_by="user:preview",
            note_to_customer="We refunded the days the service was down.",
        ),
        RefundSucceeded(**_EUR, amount=2_500, provider_refund_id="re_preview"),
        RefundRejected(**_REFUND, note="The licence key was already activated."),
        RefundFailed(**_EUR, amount=2_500, failure_reason="declined"),
        RefundReversed(
            **_EUR, amount=2_500, provider_refund_id="re_preview", failure_reason="expired_or_canceled_card"
        ),
        SubscriptionCanceled(
            **_IDS,
            subscription_id="sub_preview",
            at_period_end=True,
            ends_at=now + timedelta(days=20),
            refund_id="ref_preview",
            note_to_customer=_CANCEL_NOTE,
        ),
        SubscriptionCancelFailed(
            **_IDS,
            subscription_id="sub_preview",
            at_period_end=True,
            refund_id="ref_preview",
            reason="the provider's refusal",
            customer_email="customer@example.com",
            note_to_customer=_CANCEL_NOTE,
            no_refund=True,
        ),
        SubscriptionExtended(
            **_IDS,
            subscription_id="sub_preview",
            days=7,
            current_period_end=now + timedelta(days=27),
            refund_id="ref_preview",
        ),
    ]


def previews(
    prefs: MerchantPreferences, *, merchant_name: str, process_time: str, portal_url: str | None
) -> list[dict[str, Any]]:
    """For each customer email: its kind, when it is sent, its subject, plain text and HTML."""
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    contact = Contact(customer_email="customer@example.com", merchant_name=merchant_name, process_time=process_time)
    link = CustomerLink(url=portal_url, until=now + timedelta(days=7)) if portal_url else CustomerLink()
    shown = []
    for data in _samples(now):
        email = customer_email(data, prefs, contact, link)
        assert email is not None, f"every sample is one the customer hears of: {data.event_type}"
        text, html = render(email.content)
        kind = email.content.kind
        shown.append({"kind": kind, "when": WHEN[kind], "subject": email.content.subject, "text": text, "html": html})
    return shown
