"""What each event tells the merchant's team (alerts), and the shapes of what is sent. Pure: no I/O here.

The customer's emails are in ``customer_emails``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refundflow_shared.events import (
    DISPUTED_FAILURE_REASONS,
    EventData,
    ProviderUnavailable,
    RefundApproved,
    RefundFailed,
    RefundRequested,
    RefundReversed,
    RefundReviewOverdue,
    TeamAlertRaised,
)
from refundflow_shared.money import format_amount

# Events that only alert the team.
ALERT_ONLY_EVENT_TYPES = ("refund.review_overdue", "provider.unavailable", "team_alert.raised")


@dataclass(frozen=True)
class MerchantPreferences:
    """A merchant's notification settings, with the notifier's defaults filled in."""

    review_target: str
    sender_name: str | None = None
    reply_to: str | None = None
    team_email: str | None = None
    has_slack: bool = False
    portal_enabled: bool = True  # off: customer emails carry no link to the portal

    @property
    def routes_team_alerts(self) -> bool:
        """Whether the team has a channel for alerts (a Slack-compatible webhook or a team email)."""
        return self.has_slack or bool(self.team_email)


@dataclass(frozen=True)
class EmailContent:
    kind: str  # names the templates: <audience>/<kind>.txt.j2 and <audience>/<kind>.html.j2
    subject: str
    context: dict[str, Any]
    audience: str = "customer"  # customer, team or account: each has its own templates


@dataclass(frozen=True)
class TeamAlert:
    kind: str
    title: str
    details: dict[str, str]

    def slack_text(self) -> str:
        """Plain lines, with Slack's control characters escaped: no mention or link can be smuggled in."""
        lines = [self.title, *(f"• {key}: {value}" for key, value in self.details.items())]
        return "\n".join(lines).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def team_alerts(data: EventData) -> list[TeamAlert]:
    """What the merchant's team should hear about this event."""
    if isinstance(data, RefundRequested):
        if data.auto_approved:
            return []  # nothing to review: its refund.approved tells the team
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
        if data.failure_message:
            details["provider's message"] = data.failure_message
        details["next step"] = _after_a_failed_refund(data.failure_reason)
        return [TeamAlert("refund_failed", f"Refund failed: {format_amount(data.amount, data.currency)}", details)]
    if isinstance(data, ProviderUnavailable):
        return [
            TeamAlert(
                "provider_unavailable",
                f"Payment provider {data.provider} unavailable after {data.attempts} attempts",
                {"refund": data.refund_id, "payment": data.payment_id, "last error": data.last_error},
            )
        ]
    if isinstance(data, RefundReversed):
        details = {
            "refund": data.refund_id,
            "payment": data.payment_id,
            "what it means": "the provider had reported it succeeded, but the customer was not refunded",
            "reason": data.failure_reason,
        }
        if data.failure_message:
            details["provider's message"] = data.failure_message
        return [TeamAlert("refund_reversed", f"Refund reversed: {format_amount(data.amount, data.currency)}", details)]
    if isinstance(data, TeamAlertRaised):
        about = {name: value for name, value in (("refund", data.refund_id), ("payment", data.payment_id)) if value}
        return [TeamAlert(data.kind, data.title, {**about, **data.details})]
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


def _after_a_failed_refund(reason: str) -> str:
    """What the team does next, as the customer's email told the customer (it promises a follow-up unless disputed)."""
    if reason in DISPUTED_FAILURE_REASONS:
        return "none: the payment is disputed with the customer's bank, and the dispute decides what is paid back"
    return "the customer was told you will follow up: contact them, and refund them again once the cause is fixed"


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


def too_many_endpoints_alert(cap: int) -> TeamAlert:
    return TeamAlert(
        "too_many_webhook_endpoints",
        "Some webhook endpoints were skipped",
        {"why": f"more endpoints subscribe to an event than the {cap} a merchant may have; {cap} received it"},
    )
