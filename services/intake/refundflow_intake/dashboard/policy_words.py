"""A product's override as the policy page lists it: each rule it changes, in words. No I/O here."""

from __future__ import annotations

from typing import Any

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
