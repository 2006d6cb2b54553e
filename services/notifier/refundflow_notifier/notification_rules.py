"""What each event tells whom: the customer's email and the team's alerts. Pure: no I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refundflow_notifier.amount_format import format_amount
from refundflow_shared.events import (
    EventData,
    ProviderUnavailable,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReviewOverdue,
    RefundSucceeded,
)

# Events that only alert the team.
ALERT_ONLY_EVENT_TYPES = ("refund.review_overdue", "provider.unavailable")


@dataclass(frozen=True)
class MerchantPreferences:
    """A merchant's notification settings, with the notifier's defaults filled in."""

    review_target: str
    refund_process_time: str
    sender_name: str | None = None
    reply_to: str | None = None
    team_email: str | None = None
    slack_webhook_url: str | None = None


@dataclass(frozen=True)
class EmailContent:
    kind: str  # names the templates: <kind>.txt.j2 and <kind>.html.j2
    subject: str
    context: dict[str, Any]


@dataclass(frozen=True)
class TeamAlert:
    kind: str
    title: str
    details: dict[str, str]

    def text(self) -> str:
        return self.title + "".join(f"\n• {key}: {value}" for key, value in self.details.items())


def customer_email(data: EventData, prefs: MerchantPreferences, previous_outcome: str | None) -> EmailContent | None:
    """The email the customer gets for this event, if any. ``previous_outcome``: the refund's earlier verdict."""
    if isinstance(data, RefundRequested):
        amount = format_amount(data.amount, data.currency)
        return EmailContent(
            "refund_requested",
            f"We received your refund request for {amount}",
            {"amount": amount, "refund_id": data.refund_id, "review_target": prefs.review_target},
        )
    if isinstance(data, RefundRejected):
        return EmailContent(
            "refund_rejected", "About your refund request", {"refund_id": data.refund_id, "note": data.note}
        )
    if isinstance(data, RefundSucceeded):
        amount = format_amount(data.amount, data.currency)
        return EmailContent(
            "refund_succeeded",
            f"Your refund of {amount} is on its way",
            {
                "amount": amount,
                "refund_id": data.refund_id,
                "payment_id": data.payment_id,
                "process_time": prefs.refund_process_time,
            },
        )
    if isinstance(data, RefundFailed):
        amount = format_amount(data.amount, data.currency)
        context = {"amount": amount, "refund_id": data.refund_id}
        if previous_outcome == "succeeded":  # we told them it was on its way: say plainly that it is not
            return EmailContent("refund_reversed", f"Update on your refund of {amount}", context)
        return EmailContent("refund_failed", f"A problem with your refund of {amount}", context)
    return None


def team_alerts(data: EventData) -> list[TeamAlert]:
    """What the merchant's team should hear about this event."""
    if isinstance(data, RefundRequested):
        return [
            TeamAlert(
                "refund_to_review",
                f"New refund request to review: {format_amount(data.amount, data.currency)}",
                {"refund": data.refund_id, "payment": data.payment_id, "reason": data.reason},
            )
        ]
    if isinstance(data, RefundApproved):
        return [
            TeamAlert(
                "refund_approved",
                f"Refund approved: {format_amount(data.amount, data.currency)}",
                {"refund": data.refund_id, "payment": data.payment_id, "approved by": data.approved_by},
            )
        ]
    if isinstance(data, RefundFailed):
        details = {"refund": data.refund_id, "payment": data.payment_id, "reason": data.failure_reason}
        return [TeamAlert("refund_failed", f"Refund failed: {format_amount(data.amount, data.currency)}", details)]
    if isinstance(data, ProviderUnavailable):
        return [
            TeamAlert(
                "provider_unavailable",
                f"Payment provider {data.provider} unavailable after {data.attempts} attempts",
                {"refund": data.refund_id, "payment": data.payment_id, "last error": data.last_error},
            )
        ]
    if isinstance(data, RefundReviewOverdue):
        return [
            TeamAlert(
                "review_overdue",
                f"Refund review overdue: {format_amount(data.amount, data.currency)}",
                {
                    "refund": data.refund_id,
                    "payment": data.payment_id,
                    "requested at": data.requested_at.isoformat(timespec="minutes"),
                    "review target": f"{data.review_target_hours} hours",
                },
            )
        ]
    return []


def endpoint_disabled_alert(endpoint_id: str, url: str, reason: str) -> TeamAlert:
    return TeamAlert(
        "webhook_endpoint_disabled", "Webhook endpoint disabled", {"endpoint": endpoint_id, "url": url, "why": reason}
    )


def undeliverable_email_alert(recipient: str, kind: str, error: str) -> TeamAlert:
    return TeamAlert(
        "email_undeliverable",
        "A customer email could not be delivered",
        {"to": recipient, "email": kind, "error": error},
    )
