"""The approval rules in words, for the policy and refund pages: a product's override as the policy page lists it,
and what a threshold in another currency than the payments' does. No I/O here."""

from __future__ import annotations

from typing import Any

from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.money import format_amount


def _money(threshold: dict[str, Any]) -> str:
    return format_amount(threshold["amount"], threshold["currency"])


def _reasons(reasons: list[str]) -> str:
    return ", ".join(r.replace("_", " ").capitalize() for r in reasons) or "none"


def override_lines(override: dict[str, Any]) -> list[str]:
    """One line for each rule the stored override changes; an approval rule it turns off (null) says "off"."""
    lines = []
    if (days := override.get("refund_window_days")) is not None:
        lines.append(f"Refund window: {days} days")
    if (process_time := override.get("process_time")) is not None:
        lines.append(f"Processing time: {process_time}")
    if (categories := override.get("excluded_categories")) is not None:
        lines.append(f"Excluded categories: {', '.join(categories) or 'none'}")
    if (reasons := override.get("accepted_reasons")) is not None:
        lines.append(f"Accepted reasons: {_reasons(reasons)}")
    if (hours := override.get("review_target_hours")) is not None:
        lines.append(f"Review target: {hours} hours")
    if "auto_approve" in override:
        rule = override["auto_approve"]
        on = f"up to {_money(rule['max_amount'])} for {_reasons(rule['reasons'])}" if rule else "off"
        lines.append(f"Automatic approval: {on}")
    if "second_approval_above" in override:
        limit = override["second_approval_above"]
        lines.append(f"Two people approve above {_money(limit)}" if limit else "Two-person rule: off")
    return lines


def threshold_warnings(policy: RefundPolicy, currencies: list[str]) -> list[str]:
    """What a rule does when its threshold is in a currency none of the merchant's payments (``currencies``) are in:
    a threshold counts only refunds in its own currency (``RefundPolicy``). Nothing before the first payment."""
    warnings = []
    auto = policy.auto_approve
    if currencies and auto is not None and (currency := auto.max_amount.currency) not in currencies:
        warnings.append(
            f"Automatic approval is set in {currency}, and none of your payments are in {currency}: no refund of"
            " a payment in another currency is approved automatically."
        )
    second = policy.second_approval_above
    if currencies and second is not None and (currency := second.currency) not in currencies:
        warnings.append(
            f"The two-person rule is set in {currency}, and none of your payments are in {currency}: every refund"
            " of a payment in another currency needs two people to approve it."
        )
    return warnings


def two_people_because(policy: RefundPolicy, currency: str) -> str | None:
    """Why a refund in ``currency`` needs two approvers whatever its amount, if that is why: the two-person rule's
    threshold is in another currency."""
    second = policy.second_approval_above
    if second is None or second.currency == currency:
        return None
    return f"the two-person rule is set in {second.currency} and this payment is in {currency}"
