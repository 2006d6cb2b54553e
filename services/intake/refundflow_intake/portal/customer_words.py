"""What the customer reads: their request's status and timeline, the merchant's policy, in plain words. Pure: no
I/O here. Never who on the merchant's team acted, never the team's notes: only what a decision told the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from refundflow_intake.domain import RefundReason, RefundStatus, SubscriptionAction
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.events import DISPUTED_FAILURE_REASONS
from refundflow_shared.money import format_amount

Row = dict[str, Any]

REASONS = {
    RefundReason.PRODUCT_NOT_AS_DESCRIBED: "The product is not as described",
    RefundReason.TECHNICAL_ISSUE: "It does not work (a technical problem)",
    RefundReason.SERVICE_DISRUPTION: "The service was down or disrupted",
    RefundReason.DUPLICATE: "I was charged twice",
    RefundReason.FRAUDULENT: "I did not make this payment",
    RefundReason.UNEXPECTED_RENEWAL: "My subscription renewed unexpectedly",
    RefundReason.REQUESTED_BY_CUSTOMER: "I changed my mind",
    RefundReason.OTHER: "Something else (tell us below)",
}
# The same reasons in the policy's sentence ("Acme refunds when: ..."): the labels above are the customer's own words.
REASONS_IN_POLICY = {
    RefundReason.PRODUCT_NOT_AS_DESCRIBED: "the product is not as described",
    RefundReason.TECHNICAL_ISSUE: "it does not work (a technical problem)",
    RefundReason.SERVICE_DISRUPTION: "the service was down or disrupted",
    RefundReason.DUPLICATE: "you were charged twice",
    RefundReason.FRAUDULENT: "you did not make the payment",
    RefundReason.UNEXPECTED_RENEWAL: "your subscription renewed unexpectedly",
    RefundReason.REQUESTED_BY_CUSTOMER: "you changed your mind",
}
CANCELLED = "cancelled"  # a cancel-only decision: the refund request is closed, the subscription ends


@dataclass(frozen=True)
class CustomerStatus:
    key: str  # pending, processing, succeeded, rejected, cancelled, failed, reversed
    label: str
    summary: str
    final: bool


@dataclass(frozen=True)
class Moment:
    at: datetime
    text: str
    note: str | None = None


def day(value: datetime) -> str:
    return f"{value.day} {value.strftime('%B %Y')}"


def when(value: datetime) -> str:
    """The day and the minute, in UTC: for a moment that matters to the minute (the refund window's end)."""
    return f"{day(value)}, {value.astimezone(UTC).strftime('%H:%M')} UTC"


def status_of(
    refund: Row,
    *,
    merchant: str,
    process_time: str,
    subscription_cancelled: bool = False,
    subscription_ended: bool = False,
    access_until: datetime | None = None,
) -> CustomerStatus:
    """``subscription_cancelled``: the payment's subscription is recorded cancelled (now or at its period's end),
    whatever asked for it (a cancel the team asked again after the provider refused the decision's own);
    ``subscription_ended``: recorded as over (cancelled now, or ended before, or its last period past);
    ``access_until``: the period's end a cancel at it recorded."""
    amount = format_amount(refund["amount"], refund["currency"])
    status = RefundStatus(refund["status"])
    if status is RefundStatus.PENDING:
        return CustomerStatus(
            "pending", "Pending", f"{merchant} is reviewing your request. We will email you their decision.", False
        )
    if status is RefundStatus.PROCESSING:
        said = f"{merchant} approved a refund of {amount}: it is on its way to your original payment method."
        return CustomerStatus("processing", "Processing", said, False)
    if status is RefundStatus.SUCCEEDED:
        said = (
            f"{amount} was refunded to your original payment method. Depending on your bank, it appears on your"
            f" statement within {process_time}."
        )
        return CustomerStatus("succeeded", "Succeeded", said, True)
    if status is RefundStatus.FAILED and refund["failure_reason"] in DISPUTED_FAILURE_REASONS:
        said = (
            "The refund was not made: this payment is disputed with your bank, so the dispute decides what is paid"
            " back to you. Your bank tells you how it ends."
        )
        return CustomerStatus("failed", "Failed", said, True)
    if status is RefundStatus.FAILED:
        said = f"The refund could not be made. {merchant} has been told and will contact you; you need do nothing."
        return CustomerStatus("failed", "Failed", said, True)
    if status is RefundStatus.REVERSED:
        said = (
            f"The refund of {amount} did not reach you after all. {merchant} has been told and will contact you to"
            " refund you another way."
        )
        return CustomerStatus("reversed", "Reversed", said, True)
    refused = _cancel_refused(refund) and not subscription_cancelled
    if refund["subscription_action"] == SubscriptionAction.CANCEL_ONLY and refused:
        # The provider refused it: the team is told to cancel again (the customer sees no refusal, nor a promise).
        said = (
            f"No refund was made. {merchant} is arranging the cancellation of your subscription and will contact"
            " you if anything is needed."
        )
        return CustomerStatus(CANCELLED, "Cancellation in progress", said, True)
    if refund["subscription_action"] == SubscriptionAction.CANCEL_ONLY and subscription_ended:
        # As recorded: the provider may have ended it before the decision (its date is in the timeline).
        said = "No refund was made. Your subscription has ended: you will not be charged again."
        return CustomerStatus(CANCELLED, "Subscription ended", said, True)
    if refund["subscription_action"] == SubscriptionAction.CANCEL_ONLY:
        # Until when: the provider's date once it has cancelled (the decision's period end may be out of date).
        until = f"until {day(access_until)}" if access_until else "until then"
        said = (
            f"No refund was made. {merchant} is cancelling your subscription at the end of its current period:"
            f" you keep access {until} and will not be charged again."
        )
        return CustomerStatus(CANCELLED, "Subscription cancelled", said, True)
    return CustomerStatus("rejected", "Rejected", f"{merchant} decided not to refund this request.", True)


def cancel_wish_left(refund: Row, *, merchant: str, subscription_runs: bool) -> str | None:
    """What the refund's emails say when the customer asked to cancel their subscription too and the decision left
    it running: said while it still runs, or they could believe it cancelled until it renews."""
    decided = refund["status"] != RefundStatus.PENDING
    cancels = refund["subscription_action"] in (SubscriptionAction.REFUND_AND_CANCEL, SubscriptionAction.CANCEL_ONLY)
    if refund["cancel_subscription"] is not True or not decided or cancels or not subscription_runs:
        return None
    return (
        "You also asked to cancel your subscription: it continues, and renews as usual. To cancel it, contact"
        f" {merchant}."
    )


def _cancel_refused(refund: Row) -> bool:
    """Whether the provider's last word on the decision's cancel (on the request's timeline, when read with it) is a
    refusal."""
    outcomes = [
        entry["action"]
        for entry in refund.get("timeline", [])
        if entry["action"] in ("subscription_canceled", "subscription_cancel_failed")
    ]
    return bool(outcomes) and outcomes[-1] == "subscription_cancel_failed"


def timeline(refund: Row, entries: list[Row], *, merchant: str) -> list[Moment]:
    """The request's story for the customer: the steps they care about; approvals in progress, reviews and who
    acted are the merchant's business."""
    currency = refund["currency"]
    asked = format_amount(refund["requested_amount"] or refund["amount"], currency)
    granted = format_amount(refund["amount"], currency)
    told = refund["customer_note"]
    less = refund["requested_amount"] and refund["requested_amount"] > refund["amount"]
    wished_cancel = refund["cancel_subscription"] is True
    words: dict[str, tuple[str, str | None]] = {
        "requested": (
            f"You asked for a refund of {asked}" + (" and to cancel your subscription" if wished_cancel else ""),
            refund["reason_details"],
        ),
        "approved": (
            f"{merchant} approved a refund of {granted}" + (f" of the {asked} you asked for" if less else ""),
            told,
        ),
        "rejected": (f"{merchant} decided not to refund this request", told),
        "cancel_only": (f"{merchant} decided on no refund, and to cancel your subscription at the period's end", told),
        "succeeded": ("Refunded to your original payment method", None),
        "failed": (
            "The refund was not made: this payment is disputed with your bank, which settles it"
            if refund["failure_reason"] in DISPUTED_FAILURE_REASONS
            else f"The refund could not be made: {merchant} will contact you",
            None,
        ),
        "reversed": (f"The refund did not reach you after all: {merchant} will contact you", None),
    }
    moments = []
    for entry in entries:
        action = entry["action"]
        if action in ("subscription_canceled", "subscription_extended"):
            moments.append(Moment(entry["at"], entry["note"] or ""))  # our own words, written for both audiences
        elif action in words:
            text, note = words[action]
            moments.append(Moment(entry["at"], text, note))
    return moments


def reason_choices(policy: RefundPolicy) -> list[tuple[str, str]]:
    """(value, the customer's words), the reasons the policy accepts first."""
    ordered = sorted(REASONS, key=lambda r: (r not in policy.accepted_reasons, list(REASONS).index(r)))
    return [(reason.value, REASONS[reason]) for reason in ordered]


def policy_points(policy: RefundPolicy, merchant: str) -> list[str]:
    """The policy in a few plain sentences: window, conditions, exclusions, how long the money takes."""
    points = [f"You can ask for a refund within {policy.refund_window_days} days of your purchase."]
    if set(RefundReason) - set(policy.accepted_reasons):
        accepted = "; ".join(REASONS_IN_POLICY[r] for r in policy.accepted_reasons if r is not RefundReason.OTHER)
        points.append(f"{merchant} refunds when: {accepted}." if accepted else f"{merchant} decides case by case.")
    if policy.excluded_categories:
        points.append(f"Not refundable: {', '.join(policy.excluded_categories)} products.")
    points.append(f"Approved refunds reach your original payment method within {policy.process_time}.")
    points.append(f"Outside these terms you can still ask: {merchant} decides each request.")
    return points


def policy_text(policy: RefundPolicy, merchant: str) -> str:
    """The policy as one paragraph: the public JSON's ``text`` and the dashboard's preview say what the hosted page
    and the embed at checkout list, in the same words."""
    return " ".join(policy_points(policy, merchant))


@dataclass(frozen=True)
class Eligibility:
    in_window: bool
    excluded: bool
    sentences: list[str]  # the window first, then the exclusion, then that the customer may still ask

    @property
    def inside(self) -> bool:
        return self.in_window and not self.excluded


def eligibility(
    policy: RefundPolicy, *, paid_at: datetime, now: datetime, category: str | None, merchant: str
) -> Eligibility:
    """Whether the payment is inside the policy, and the honest sentences that say so."""
    # To the minute, as the window is counted (``RefundPolicy.flags``): its last day alone read as the whole day.
    deadline = when(policy.refund_deadline(paid_at))
    window = policy.refund_window_days
    in_window = policy.within_window(paid_at=paid_at, now=now)
    if in_window:
        said = [f"You paid on {day(paid_at)}: you are within the {window}-day refund window, until {deadline}."]
    else:
        said = [f"You paid on {day(paid_at)}: the {window}-day refund window ended on {deadline}."]
    excluded = category is not None and category in policy.excluded_categories
    if excluded:
        said.append(f"{merchant}'s policy does not normally refund {category} products, like this one.")
    if not in_window or excluded:
        said.append(f"You can still ask: {merchant} reads every request and decides.")
    return Eligibility(in_window, excluded, said)
