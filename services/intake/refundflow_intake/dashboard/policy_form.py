"""The refund policy editor's form, read into the same models the API validates. No I/O here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from refundflow_intake.dashboard.money_text import parse_amount
from refundflow_intake.domain import DomainError
from refundflow_intake.portal.customer_words import policy_text
from refundflow_intake.refund_policy import (
    MAX_CATEGORIES,
    MAX_CATEGORY_LENGTH,
    RefundPolicy,
    RefundPolicyFields,
    RefundPolicyOverride,
)
from refundflow_shared.money import UnknownCurrency


class InvalidPolicyForm(DomainError):
    code = "invalid_request"
    in_api = False


# The longest field the policy holds (its categories, one per line, each line break sent as two: CRLF), with room to
# spare so that the policy's own rules say what is wrong with a near miss; beyond it, the body is not a person's typing.
MAX_TYPED = 2 * MAX_CATEGORIES * (MAX_CATEGORY_LENGTH + 2)


def _text(form: FormData, name: str) -> str:
    """What was typed in the field, whole: the policy's own rules refuse what it cannot hold, in words."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if len(value) > MAX_TYPED:
        raise InvalidPolicyForm(f"{name.replace('_', ' ')} is {len(value)} characters long: at most {MAX_TYPED}")
    return value.strip()


def _whole(form: FormData, name: str) -> int | str | None:
    """A typed number as the integer the policy takes (what is not one is left for the policy to refuse)."""
    text = _text(form, name)
    return int(text) if text.isdecimal() else text or None


def _categories(typed: str) -> list[str]:
    # One per line: a category may hold a comma ("food, drink"), never a line break (the API's one-line rule).
    return list(dict.fromkeys(c.strip() for c in typed.splitlines() if c.strip()))


def _money(form: FormData, prefix: str) -> dict[str, Any] | None:
    if not form.get(f"{prefix}_enabled"):
        return None
    currency = _text(form, f"{prefix}_currency").upper()
    try:
        return {"amount": parse_amount(_text(form, f"{prefix}_amount"), currency), "currency": currency}
    except UnknownCurrency:
        raise InvalidPolicyForm(f"'{currency[:5]}' is not a currency code (e.g. EUR)") from None


def _validated(model: type[Any], values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = " ".join(str(part) for part in first["loc"]).replace("_", " ")
        raise InvalidPolicyForm(f"{where}: {first['msg']}") from None


def policy_from_form(form: FormData) -> RefundPolicyFields:
    auto = _money(form, "auto_approve")
    values: dict[str, Any] = {
        "refund_window_days": _whole(form, "refund_window_days"),
        "excluded_categories": _categories(_text(form, "excluded_categories")),
        "accepted_reasons": form.getlist("accepted_reasons"),
        "process_time": _text(form, "process_time"),
        "review_target_hours": _whole(form, "review_target_hours"),
        "auto_approve": {"max_amount": auto, "reasons": form.getlist("auto_approve_reasons")} if auto else None,
        "second_approval_above": _money(form, "second_approval"),
    }
    # Every field is on the page: one left empty is refused, as the API would, never its default put in its place.
    fields: RefundPolicyFields = _validated(RefundPolicyFields, values)
    return fields


def preview_text(form: FormData, merchant: str) -> str:
    """The public text of the policy as typed, as checkout would show it."""
    return policy_text(RefundPolicy.model_validate(policy_from_form(form).model_dump()), merchant)


def override_from_form(form: FormData) -> tuple[str, RefundPolicyOverride]:
    product_id = _text(form, "product_id")
    if not product_id or len(product_id) > 255:
        raise InvalidPolicyForm("give the product id the override is for")
    values: dict[str, Any] = {}
    if window := _whole(form, "refund_window_days"):
        values["refund_window_days"] = window
    if categories := _text(form, "excluded_categories"):
        values["excluded_categories"] = _categories(categories)
    if process_time := _text(form, "process_time"):
        values["process_time"] = process_time
    if not values:
        raise InvalidPolicyForm("an override changes at least one thing: the window, the categories or the time")
    override: RefundPolicyOverride = _validated(RefundPolicyOverride, values)
    return product_id, override
