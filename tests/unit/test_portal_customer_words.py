"""What the portal tells a customer: a failed refund's status card and story, and a subscription's goodwill days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refundflow_intake.domain import RefundReason
from refundflow_intake.portal.customer_words import cancel_wish_left, eligibility, policy_text, status_of, timeline
from refundflow_intake.refund_policy import FLAG_OUTSIDE_WINDOW, RefundPolicy
from refundflow_intake.subscription_outcomes import extension_words
from refundflow_shared.events import SubscriptionExtended

AT = datetime(2026, 12, 24, 10, tzinfo=UTC)


def failed(reason: str) -> dict[str, object]:
    return {
        "amount": 1500,
        "requested_amount": None,
        "currency": "JPY",
        "status": "failed",
        "failure_reason": reason,
        "subscription_action": None,
        "cancel_subscription": None,
        "customer_note": None,
        "reason_details": None,
    }


@pytest.mark.parametrize("reason", ["payment_disputed", "charge_for_pending_refund_disputed"])
def test_a_refund_stopped_by_a_dispute_points_to_the_bank_not_to_the_merchant(reason: str) -> None:
    said = status_of(failed(reason), merchant="Acme", process_time="5-10 days").summary

    assert "disputed with your bank" in said and "the dispute decides" in said
    assert "will contact you" not in said, "nobody will: the merchant cannot refund a disputed payment"
    [moment] = timeline(failed(reason), [{"action": "failed", "at": AT, "note": None}], merchant="Acme")
    assert "disputed with your bank" in moment.text and "will contact you" not in moment.text


def test_any_other_failure_says_the_merchant_follows_up() -> None:
    said = status_of(failed("insufficient_funds"), merchant="Acme", process_time="5-10 days").summary

    assert "Acme has been told and will contact you" in said
    assert "insufficient" not in said
    [moment] = timeline(failed("insufficient_funds"), [{"action": "failed", "at": AT, "note": None}], merchant="Acme")
    assert moment.text == "The refund could not be made: Acme will contact you"


def test_a_wish_to_cancel_is_said_left_out_only_once_decided_without_a_cancel_and_while_the_subscription_runs() -> None:
    wished = {**failed("insufficient_funds"), "cancel_subscription": True}
    left = "You also asked to cancel your subscription: it continues, and renews as usual. To cancel it, contact Acme."

    for status in ("processing", "succeeded", "failed", "reversed", "rejected"):
        assert cancel_wish_left({**wished, "status": status}, merchant="Acme", subscription_runs=True) == left
    assert cancel_wish_left({**wished, "status": "pending"}, merchant="Acme", subscription_runs=True) is None
    assert cancel_wish_left(wished, merchant="Acme", subscription_runs=False) is None, "ended or cancelled already"
    for action in ("refund_and_cancel", "cancel_only"):
        decided = {**wished, "subscription_action": action}
        assert cancel_wish_left(decided, merchant="Acme", subscription_runs=True) is None
    kept = {**wished, "cancel_subscription": False}
    assert cancel_wish_left(kept, merchant="Acme", subscription_runs=True) is None


def test_goodwill_days_are_told_in_the_singular_and_as_access_when_it_is_the_last_period() -> None:
    ids = {"merchant_id": "m", "payment_id": "p", "subscription_id": "s", "refund_id": "r"}
    one_day = SubscriptionExtended(**ids, days=1, current_period_end=AT)
    last = SubscriptionExtended(**ids, days=7, current_period_end=AT, last_period=True)

    assert extension_words(one_day) == "Subscription extended by 1 day: the next payment is due on 24 December 2026"
    assert extension_words(last) == (
        "Subscription extended by 7 days: access lasts until 24 December 2026, when the subscription ends"
    )


def test_a_cancel_only_says_what_was_recorded_of_the_subscription() -> None:
    """It said "you keep access until then" whatever the provider did: also when the subscription had ended."""
    closed = {"status": "rejected", "amount": 1_000, "currency": "EUR", "subscription_action": "cancel_only"}
    asked = status_of(closed, merchant="Acme", process_time="5-10 days")
    assert "you keep access until then" in asked.summary
    scheduled = status_of(
        closed, merchant="Acme", process_time="5-10 days", access_until=datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert "you keep access until 1 December 2026" in scheduled.summary
    ended = status_of(closed, merchant="Acme", process_time="5-10 days", subscription_ended=True)
    assert (ended.label, ended.summary) == (
        "Subscription ended",
        "No refund was made. Your subscription has ended: you will not be charged again.",
    )


def test_the_window_the_customer_is_told_ends_when_the_request_is_flagged_outside_it() -> None:
    """Told "within the 14-day refund window, until 15 November 2026", a customer asking at 11:00 that day (paid at
    10:00 on 1 November) was flagged outside it, and the page said the window "ended on 15 November"."""
    policy = RefundPolicy(refund_window_days=14)
    paid_at = datetime(2026, 11, 1, 10, tzinfo=UTC)

    def told(now: datetime) -> tuple[bool, str, list[str]]:
        seen = eligibility(policy, paid_at=paid_at, now=now, category=None, merchant="Acme")
        flags = policy.flags(paid_at=paid_at, now=now, category=None, reason=RefundReason.DUPLICATE)
        return seen.in_window, seen.sentences[0], flags

    cut_off = datetime(2026, 11, 15, 10, tzinfo=UTC)
    assert told(cut_off) == (
        True,
        "You paid on 1 November 2026: you are within the 14-day refund window, until 15 November 2026, 10:00 UTC.",
        [],
    )
    assert told(cut_off + timedelta(hours=1)) == (
        False,
        "You paid on 1 November 2026: the 14-day refund window ended on 15 November 2026, 10:00 UTC.",
        [FLAG_OUTSIDE_WINDOW],
    )


def test_the_reasons_a_policy_accepts_are_said_to_the_customer_in_the_second_person() -> None:
    """The reasons' labels are the customer's own words ("I was charged twice"): lowercased into the policy's
    sentence they read "Acme refunds when: i was charged twice"."""
    policy = RefundPolicy.model_validate(
        {"accepted_reasons": ["duplicate", "fraudulent", "unexpected_renewal", "requested_by_customer"]}
    )
    said = policy_text(policy, "Acme")
    assert (
        "Acme refunds when: you were charged twice; you did not make the payment;"
        " your subscription renewed unexpectedly; you changed your mind." in said
    )
