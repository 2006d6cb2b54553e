"""Stripe-style parameter parsing for the refund endpoints (bracketed form keys, integer strings).

Errors raised here are validation failures: Stripe stores no idempotent result for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from refundflow_sandbox.metadata import MAX_METADATA_KEYS, METADATA_FIELD, checked_metadata, too_many_keys
from refundflow_sandbox.refunds import REFUND_REASONS, RefundRequest
from refundflow_sandbox.stripe_errors import ApiError, invalid_request

_CREATE_PARAMS = frozenset({"payment_intent", "charge", "amount", "currency", "reason"})
_CHARGE_PREFIXES = ("ch_", "py_")  # a card charge, and a payment of another method (Stripe's charge objects)
_LIST_PARAMS = frozenset({"payment_intent", "charge", "limit", "starting_after", "ending_before"})


@dataclass(frozen=True)
class ListRefundsQuery:
    payment_intent: str | None = None
    charge: str | None = None
    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None


def parse_create_refund(items: Iterable[tuple[str, str]]) -> RefundRequest:
    """``POST /v1/refunds`` form fields to a RefundRequest; the last of repeated fields wins."""
    fields: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in items:
        match = METADATA_FIELD.match(name)
        if match:
            metadata[match["key"]] = value
        elif name in _CREATE_PARAMS:
            fields[name] = value
        else:
            raise _unknown_parameter(name)

    payment_intent, charge = fields.get("payment_intent", ""), fields.get("charge", "")
    if bool(payment_intent) == bool(charge):
        raise invalid_request(
            "One of the following params should be provided for this request: payment_intent or charge.",
            code="parameter_missing",
            param="payment_intent",
        )
    _check_payment(payment_intent, charge)
    return RefundRequest(
        payment=payment_intent or charge,
        amount=_positive_int(fields["amount"], "amount") if "amount" in fields else None,
        currency=_currency(fields["currency"]) if "currency" in fields else None,
        reason=_reason(fields["reason"]) if "reason" in fields else None,
        metadata=_metadata(metadata),
    )


def parse_list_refunds(items: Iterable[tuple[str, str]]) -> ListRefundsQuery:
    fields: dict[str, str] = {}
    for name, value in items:
        if name not in _LIST_PARAMS:
            raise _unknown_parameter(name)
        fields[name] = value
    limit = _positive_int(fields["limit"], "limit") if "limit" in fields else 10
    if limit > 100:
        raise invalid_request(
            "This value must be less than or equal to 100.", code="parameter_invalid_integer", param="limit"
        )
    _check_payment(fields.get("payment_intent", ""), fields.get("charge", ""))
    return ListRefundsQuery(
        payment_intent=fields.get("payment_intent") or None,
        charge=fields.get("charge") or None,
        limit=limit,
        starting_after=fields.get("starting_after") or None,
        ending_before=fields.get("ending_before") or None,
    )


def _check_payment(payment_intent: str, charge: str) -> None:
    """An id of another kind of object names no payment intent (or charge) at Stripe: ``resource_missing``."""
    if payment_intent and not payment_intent.startswith("pi_"):
        raise invalid_request(
            f"No such payment_intent: '{payment_intent}'", code="resource_missing", param="payment_intent"
        )
    if charge and not charge.startswith(_CHARGE_PREFIXES):
        raise invalid_request(f"No such charge: '{charge}'", code="resource_missing", param="charge")


def _positive_int(value: str, param: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise invalid_request(f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)
    number = int(value)
    if number < 1:
        raise invalid_request(
            "This value must be greater than or equal to 1.", code="parameter_invalid_integer", param=param
        )
    return number


def _currency(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise invalid_request(f"Invalid currency: {value.lower()}.", param="currency")
    return value.lower()


def _reason(value: str) -> str:
    if value not in REFUND_REASONS:
        raise invalid_request("Invalid reason: must be one of " + ", ".join(sorted(REFUND_REASONS)), param="reason")
    return value


def _metadata(raw: dict[str, str]) -> dict[str, str]:
    # An empty value unsets a key in Stripe; on create that simply means "absent".
    metadata = {key: value for key, value in raw.items() if value != ""}
    if len(metadata) > MAX_METADATA_KEYS:
        raise too_many_keys()
    return checked_metadata(metadata)


def _unknown_parameter(name: str) -> ApiError:
    return invalid_request(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
