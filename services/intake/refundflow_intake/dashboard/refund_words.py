"""The refund page's words: why a request is flagged (in the policy's own terms) and what each timeline entry
means. Pure: no I/O here."""

from __future__ import annotations

from datetime import datetime, timedelta

from refundflow_intake import actors
from refundflow_intake.refund_policy import (
    FLAG_EXCLUDED_CATEGORY,
    FLAG_OUTSIDE_WINDOW,
    FLAG_REASON_NOT_ACCEPTED,
)
from refundflow_intake.request_terms import RequestTerms

_ACTIONS = {
    "requested": "Requested",
    "approved": "Approved",
    "rejected": "Rejected",
    "cancel_only": "Closed: subscription cancelled, no refund",
    "approval_restarted": "Approvals restarted",
    "succeeded": "Refunded at the provider",
    "failed": "Failed at the provider",
    "reversed": "Reversed by the provider",
    "review_overdue": "Review overdue",
    "subscription_canceled": "Subscription cancelled at the provider",
    "subscription_cancel_failed": "Subscription cancel refused by the provider",
    "subscription_cancel_not_asked": "Subscription cancel not asked again",
    "subscription_extended": "Subscription extended at the provider",
    "subscription_extension_failed": "Subscription extension refused by the provider",
}


_SUBSCRIPTION_ACTIONS = {
    "refund_and_cancel": "refund and cancel the subscription",
    "refund_only": "refund only",
}


def subscription_choice(action: str | None, extend_days: int | None) -> str:
    """An approval's subscription choice in words ("refund only, 14 days more"); "" when there is none."""
    words = [_SUBSCRIPTION_ACTIONS.get(action, action)] if action else []
    if extend_days is not None:
        words.append(f"{extend_days} days more" if extend_days != 1 else "1 day more")
    return ", ".join(words)


def flag_explanations(
    flags: list[str], terms: RequestTerms, *, paid_at: datetime, category: str | None, reason: str
) -> list[tuple[str, str]]:
    """(title, the policy's words) for each flag on the request, in the ``terms`` it was judged by."""
    elapsed = terms.asked_at - paid_at
    # Whole days, counted down: "more than" when there is a part-day over, or five hours past a 14-day window
    # would read "asked 14 days after".
    days = f"{elapsed.days} days" if elapsed == timedelta(days=elapsed.days) else f"more than {elapsed.days} days"
    words = {
        FLAG_OUTSIDE_WINDOW: (
            "Outside the refund window",
            f"Your policy: refunds within {terms.refund_window_days} days of purchase. "
            f"This was asked {days} after the payment.",
        ),
        FLAG_EXCLUDED_CATEGORY: (
            "Excluded category",
            f"Your policy does not refund {', '.join(terms.excluded_categories)} products; "
            f"this product is {category or 'uncategorised'}.",
        ),
        FLAG_REASON_NOT_ACCEPTED: (
            "Reason not accepted",
            f"Your policy does not list '{reason.replace('_', ' ')}' among the accepted reasons.",
        ),
    }
    return [words.get(flag, (flag.replace("_", " ").capitalize(), "")) for flag in flags]


def action_words(action: str) -> str:
    if action.startswith("approval_") and "_of_" in action:
        given, _, needed = action.removeprefix("approval_").partition("_of_")
        return f"Approved ({given} of {needed} approvers)"
    return _ACTIONS.get(action, action.replace("_", " ").capitalize())


def actor_words(actor: str, actor_name: str | None) -> str:
    """Who acted, as a person reads it: a name and email, a key's name, the customer, or a rule."""
    if actor_name:
        return actor_name
    if actor == actors.AUTO_APPROVER:
        return "Your auto-approval rule"
    if actor.startswith(actors.CUSTOMER):
        return f"The customer ({actor.removeprefix(actors.CUSTOMER)})"
    if actor.startswith("refundflow/"):
        return "Refundflow (" + actor.removeprefix("refundflow/") + ")"
    return actor
