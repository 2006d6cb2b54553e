"""The merchant's refund policy and what it says about one request: flags and approvals. No I/O here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from refundflow_intake.api.fields import ONE_LINE
from refundflow_intake.domain import AutoApproveReasonNotAccepted, RefundReason
from refundflow_intake.json_body import JsonBody, whole_number
from refundflow_shared.money import CurrencyCode, Money

DEFAULT_EXCLUDED_CATEGORIES = ["consumable", "customized"]

# Soft rules: the request is still accepted (pending), the merchant sees why it may not qualify.
FLAG_OUTSIDE_WINDOW = "outside_refund_window"
FLAG_EXCLUDED_CATEGORY = "excluded_category"
FLAG_REASON_NOT_ACCEPTED = "reason_not_accepted"

# One line each: they are shown in pages and emails, and stored as JSON (which cannot hold a NUL).
MAX_CATEGORY_LENGTH = 100
Category = Annotated[str, Field(min_length=1, max_length=MAX_CATEGORY_LENGTH, pattern=ONE_LINE)]
MAX_CATEGORIES = 50
MAX_REASONS = 20  # the reasons, with room for repeats


class Threshold(Money):
    """An amount the policy compares refunds with; its currency one of the listed codes, as the API takes them.
    A ``Money`` is taken as one (from its attributes)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    currency: CurrencyCode

    @field_validator("amount", mode="before")
    @classmethod
    def _whole_amount(cls, value: object) -> object:
        return whole_number(value)


class AutoApproveRule(JsonBody):
    """Approve without a person when the payment's refunds, this one with them, come to at most ``max_amount``,
    within the window, with no flags and a reason in ``reasons``. A threshold in another currency than the
    refund's never auto-approves."""

    max_amount: Threshold
    reasons: list[RefundReason] = Field(min_length=1, max_length=MAX_REASONS)


class RefundPolicyFields(JsonBody):
    refund_window_days: int = Field(
        default=14, ge=7, le=30, strict=True, description="days after payment a refund is due"
    )
    excluded_categories: list[Category] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED_CATEGORIES), max_length=MAX_CATEGORIES
    )
    accepted_reasons: list[RefundReason] = Field(default_factory=lambda: list(RefundReason), max_length=MAX_REASONS)
    process_time: str = Field(default="5–10 business days", min_length=1, max_length=100, pattern=ONE_LINE)
    review_target_hours: int = Field(
        default=48, ge=1, le=720, strict=True, description="pending longer than this is overdue"
    )
    auto_approve: AutoApproveRule | None = None
    second_approval_above: Threshold | None = Field(
        default=None,
        description=(
            "refunds above this, counted with what the payment's other refunds sent, need two different approvers;"
            " in another currency, always two"
        ),
    )


class RefundPolicy(RefundPolicyFields):
    """A complete policy: the merchant's, or the merchant's with a product's override applied."""

    def with_override(self, override: dict[str, Any]) -> RefundPolicy:
        return RefundPolicy.model_validate({**self.model_dump(), **override})

    def refund_deadline(self, paid_at: datetime) -> datetime:
        """The last moment a request is inside the window: the payment's time, to the second, N days on."""
        return paid_at + timedelta(days=self.refund_window_days)

    def within_window(self, *, paid_at: datetime, now: datetime) -> bool:
        return now <= self.refund_deadline(paid_at)

    def flags(self, *, paid_at: datetime, now: datetime, category: str | None, reason: RefundReason) -> list[str]:
        flags = []
        if not self.within_window(paid_at=paid_at, now=now):
            flags.append(FLAG_OUTSIDE_WINDOW)
        if category is not None and category in self.excluded_categories:
            flags.append(FLAG_EXCLUDED_CATEGORY)
        if reason not in self.accepted_reasons:
            flags.append(FLAG_REASON_NOT_ACCEPTED)
        return flags

    def auto_approves(
        self, *, amount: int, refunded: int, currency: str, flags: list[str], reason: RefundReason
    ) -> bool:
        """Whether the rule approves ``amount`` on a payment whose refunds already hold ``refunded``: the rule's
        limit is on the payment's refunds together, or requests split small would take it all without a person."""
        rule = self.auto_approve
        # ``refunded`` counts pending refunds too: more than the two-person rule counts, never less.
        if rule is None or flags or reason not in rule.reasons:
            return False
        if self.approvals_required(amount, currency, refunded=refunded) > 1:
            return False
        return rule.max_amount.currency == currency and refunded + amount <= rule.max_amount.amount

    def approvals_required(self, amount: int, currency: str, *, refunded: int) -> int:
        """How many approvers ``amount`` needs on a payment whose other refunds sent or are sending ``refunded``
        (approved and not failed or reversed, and external ones): the threshold is on them together, or one
        approver could send the whole payment in refunds each at the threshold."""
        limit = self.second_approval_above
        if limit is None:
            return 1
        return 2 if limit.currency != currency or refunded + amount > limit.amount else 1


class RefundPolicyOverride(JsonBody):
    """A product's exceptions to the merchant's policy: only the fields given replace the merchant's. Answered as
    stored: a field left out follows the merchant's policy, an approval rule given as null is off for the product,
    so that an override read and sent back changes nothing."""

    refund_window_days: int | None = Field(default=None, ge=7, le=30, strict=True)
    excluded_categories: list[Category] | None = Field(default=None, max_length=MAX_CATEGORIES)
    accepted_reasons: list[RefundReason] | None = Field(default=None, max_length=MAX_REASONS)
    process_time: str | None = Field(default=None, min_length=1, max_length=100, pattern=ONE_LINE)
    review_target_hours: int | None = Field(default=None, ge=1, le=720, strict=True)
    auto_approve: AutoApproveRule | None = None
    second_approval_above: Threshold | None = None

    # No return type: pydantic then documents the answer as the override's fields, not as any object.
    @model_serializer(mode="wrap")
    def _only_what_it_sets(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Answered with null, a field it leaves to the merchant's policy came back as "off" (an approval rule).
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if k in self.model_fields_set}

    def fields_set(self) -> dict[str, Any]:
        given = self.model_dump(mode="json", exclude_unset=True)
        # An explicit null turns an approval rule off; elsewhere it means "as the merchant's".
        return {k: v for k, v in given.items() if v is not None or k in _NULLABLE}


_NULLABLE = ("auto_approve", "second_approval_above")
APPROVAL_RULES = _NULLABLE  # who may approve what without a second person


def approval_rules(document: dict[str, Any] | None) -> dict[str, Any]:
    """The approval rules a stored policy or override holds (left out of an override: the merchant's apply)."""
    return {k: document[k] for k in APPROVAL_RULES if document is not None and k in document}


# The reasons each policy's automatic-approval rule names and its accepted reasons leave out, by product (None: the
# merchant's policy; a product's, its override on the merchant's).
ReasonsNotAccepted = dict[str | None, tuple[str, ...]]


def auto_approve_reasons_not_accepted(policy: RefundPolicy) -> tuple[str, ...]:
    """The reasons the policy's automatic-approval rule is for and it does not accept: the rule approves nothing for
    them (the request is flagged ``reason_not_accepted``, and a flagged request is never auto-approved)."""
    rule = policy.auto_approve
    return tuple(r.value for r in rule.reasons if r not in policy.accepted_reasons) if rule else ()


def check_auto_approve_reasons(before: ReasonsNotAccepted, after: ReasonsNotAccepted) -> None:
    """Refuse a save that adds an automatic-approval rule for a reason its policy does not accept (``before`` and
    ``after`` the save, from ``auto_approve_reasons_not_accepted``). One stored before such a save was refused is kept
    until a save adds another: refusing it refused every save of its merchant, whatever the save changed."""
    for product_id, reasons in after.items():
        added = [r for r in reasons if r not in before.get(product_id, ())]
        if added:
            whose = f"product {product_id}'s override on your policy" if product_id is not None else "your policy"
            raise AutoApproveReasonNotAccepted(
                f"automatic approval ({whose}) is for reasons its accepted reasons leave out: {', '.join(added)};"
                " a request for one is flagged, and a flagged request is never approved automatically"
            )
