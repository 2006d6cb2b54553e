"""The HTTP API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from refundflow_intake.api import examples as ex
from refundflow_intake.api.fields import MAX_NOTE, Count, Currency, Email, Flag, Id, Line, Note, ShortLine, Timestamp
from refundflow_intake.domain import PaymentStatus, RefundReason, RefundStatus, SubscriptionAction
from refundflow_intake.json_body import JsonBody
from refundflow_intake.refund_policy import RefundPolicy, RefundPolicyOverride
from refundflow_shared.events import Product, SubscriptionPeriod, not_in_the_future
from refundflow_shared.money import MinorUnits, MinorUnitsOut

Body = JsonBody

# Cross-field rules, in the document as JSON Schema (``oneOf``/``anyOf``) and enforced by the validators or use cases.
_NULL_OR_ABSENT: JsonDict = {"type": "null"}  # under ``properties``: the field is absent or null
AMOUNT_OR_PRORATION: JsonDict = {
    "anyOf": [{"properties": {field: _NULL_OR_ABSENT}} for field in ("amount", "proration")]
}


def details_required_for_other(details: str) -> JsonDict:
    """Reason ``other`` needs its free text (``reason_details_required`` when it is missing, or spaces alone:
    ``domain.stated_details``)."""
    said: JsonDict = {"type": "string", "minLength": 1, "maxLength": MAX_NOTE, "pattern": r"\S"}
    return {
        "anyOf": [
            {"properties": {"reason": {"not": {"const": RefundReason.OTHER.value}}}},
            {"required": [details], "properties": {details: said}},
        ]
    }


class ProductIn(Body):
    id: Id
    name: Line = Field(min_length=1)
    kind: Literal["one_time", "subscription"]
    category: ShortLine | None = Field(
        default=None, min_length=1, description="e.g. digital, service, consumable, customized"
    )


class SubscriptionIn(Body):
    """The subscription the payment paid for, and the period it paid for (its end after its start)."""

    id: Id
    current_period_start: Timestamp
    current_period_end: Timestamp


class PaymentCreate(Body):
    """A captured payment, registered by the platform (admin token) for one of its merchants."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "mer_7a01",
                    "customer_email": "ada@example.com",
                    "customer_name": "Ada Lovelace",
                    "amount": 2900,
                    "currency": "EUR",
                    "provider_payment_id": "pi_3PqX",
                    "paid_at": "2026-11-20T10:00:00Z",
                    "product": {"id": "prod_pro", "name": "Pro plan", "kind": "subscription", "category": "service"},
                    "subscription": {
                        "id": "sub_1",
                        "current_period_start": "2026-11-20T10:00:00Z",
                        "current_period_end": "2026-12-18T10:00:00Z",
                    },
                }
            ],
            "oneOf": [
                {
                    "properties": {"product": {"properties": {"kind": {"const": "subscription"}}}},
                    "required": ["subscription"],
                    "not": {"properties": {"subscription": _NULL_OR_ABSENT}},
                },
                {
                    "properties": {
                        "product": {"properties": {"kind": {"const": "one_time"}}},
                        "subscription": _NULL_OR_ABSENT,
                    }
                },
            ],
        },
    )

    merchant_id: Id = Field(description="whose payment it is")
    customer_email: Email
    customer_name: Line | None = None
    amount: MinorUnits = Field(gt=0)
    currency: Currency
    provider_payment_id: Id = Field(
        description="the provider's payment: a payment intent (pi_...) or a charge (ch_..., py_...); one merchant's,"
        " once"
    )
    paid_at: Annotated[Timestamp, AfterValidator(not_in_the_future)] = Field(
        description="when the customer paid: not later than now (a few minutes of clock skew allowed)"
    )
    product: ProductIn
    subscription: SubscriptionIn | None = Field(
        default=None, description="required when product.kind is subscription, absent (or null) otherwise"
    )

    @model_validator(mode="after")
    def _subscription_matches_product(self) -> Self:
        if (self.product.kind == "subscription") != (self.subscription is not None):
            raise ValueError("subscription is required for, and only for, a subscription product")
        if self.subscription and self.subscription.current_period_end <= self.subscription.current_period_start:
            raise ValueError("subscription.current_period_end must be after current_period_start")
        return self


class ProrationIn(Body):
    """A share of the payment: ``unused_days`` left in the period, or ``affected_days`` of downtime, out of
    ``period_days`` (default: the subscription's current period). Rounded half up to a minor unit."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"unused_days": 14}, {"affected_days": 3, "period_days": 30}],
            "oneOf": [
                {"required": ["unused_days"], "properties": {"affected_days": _NULL_OR_ABSENT}},
                {"required": ["affected_days"], "properties": {"unused_days": _NULL_OR_ABSENT}},
            ],
        },
    )

    unused_days: Count | None = Field(default=None, gt=0, le=3660)
    affected_days: Count | None = Field(default=None, gt=0, le=3660)
    period_days: Count | None = Field(default=None, gt=0, le=3660)

    @model_validator(mode="after")
    def _one_kind_of_days(self) -> Self:
        if (self.unused_days is None) == (self.affected_days is None):  # the oneOf above
            raise ValueError("give exactly one of unused_days and affected_days")
        return self

    @property
    def days(self) -> int:
        days = self.unused_days if self.unused_days is not None else self.affected_days
        assert days is not None
        return days


class RefundCreate(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"payment_id": "pay_1", "reason": "service_disruption", "proration": {"affected_days": 7}},
                {"payment_id": "pay_1", "reason": "duplicate", "amount": 1000},
            ],
            "allOf": [AMOUNT_OR_PRORATION, details_required_for_other("reason_details")],
        },
    )

    payment_id: Id
    reason: RefundReason
    reason_details: Note | None = Field(default=None, description="free text; required for other")
    amount: MinorUnits | None = Field(
        default=None, gt=0, description="in minor units; defaults to all that is refundable"
    )
    proration: ProrationIn | None = Field(default=None, description="instead of amount")
    currency: Currency | None = None


class RefundQuoteRequest(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"payment_id": "pay_1", "proration": {"unused_days": 14}}],
            **AMOUNT_OR_PRORATION,
        },
    )

    payment_id: Id
    reason: RefundReason = RefundReason.REQUESTED_BY_CUSTOMER
    amount: MinorUnits | None = Field(
        default=None, gt=0, description="in minor units; defaults to all that is refundable"
    )
    proration: ProrationIn | None = None
    currency: Currency | None = None


class RefundQuote(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUOTE))

    amount: int = Field(description="what the refund would be, in minor units")
    currency: str
    refundable_amount: MinorUnitsOut
    flags: list[str]
    approvals_required: int
    auto_approved: bool = Field(description="whether the policy would approve it without a person")


class Approval(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subscription_action": "refund_only",
                    "extend_days": 7,
                    "note": "Outage on 3 Nov, ticket 1234",
                    "note_to_customer": "Sorry for the outage: we refunded the days it lasted and added a week.",
                }
            ],
            # A goodwill extension of a subscription the approval cancels is refused (extension_conflicts_with_cancel).
            "anyOf": [
                {"properties": {"extend_days": _NULL_OR_ABSENT}},
                {"properties": {"subscription_action": {"not": {"const": SubscriptionAction.REFUND_AND_CANCEL.value}}}},
            ],
        },
    )

    amount: MinorUnits | None = Field(
        default=None,
        gt=0,
        description=(
            "in minor units: approve less than asked; a second approver must approve the same amount (and"
            " subscription action and extension)"
        ),
    )
    subscription_action: SubscriptionAction | None = Field(
        default=None,
        description="subscriptions only; default refund_and_cancel (refund_only when the customer asked to keep it,"
        " or the subscription has ended)",
    )
    extend_days: Count | None = Field(
        default=None,
        gt=0,
        le=365,
        description="goodwill extension of the current period, subscriptions only; not with refund_and_cancel",
    )
    note: Note | None = Field(default=None, description="for the audit trail; not sent to the customer")
    note_to_customer: Note | None = Field(
        default=None, description="told to the customer with the approval: say why when approving less than asked"
    )


class Rejection(Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "The licence key was already activated."}]}
    )

    note: Note | None = Field(
        default=None,
        description="told to the customer when they asked for the refund (channel portal or command); a refund you"
        " made through the API is rejected without telling the customer, and the note stays with your team",
    )


class SubscriptionCancel(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"at_period_end": True}]})

    at_period_end: Flag = Field(default=True, description="true: the customer keeps access until the period ends")


class TimelineEntry(BaseModel):
    status: RefundStatus = Field(description="the refund's status after this step")
    action: str
    actor: str = Field(description="user:<id> (a person), api_key:<id>, customer:<email>, policy:..., or a service")
    actor_name: str | None = Field(default=None, description="the person's name and email, or the API key's name")
    note: str | None
    at: datetime


class RefundSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.REFUND_SUMMARY))

    id: str
    payment_id: str
    amount: MinorUnitsOut
    requested_amount: int | None = Field(description="what was asked for, in minor units")
    currency: str
    reason: str
    reason_details: str | None
    channel: str
    flags: list[str]
    status: RefundStatus
    failure_reason: str | None
    provider_refund_id: str | None = Field(
        default=None, description="the payment provider's id of this refund (Stripe's re_...), once it reported it"
    )
    subscription_action: str | None
    extend_days: int | None
    decision_note: str | None = Field(
        description="the team's note (a rejection's is told to the customer too, when they asked)"
    )
    customer_note: str | None = Field(default=None, description="what the decision told the customer")
    cancel_subscription: bool | None = Field(
        default=None, description="asked through the portal: whether the customer wants their subscription cancelled"
    )
    decided_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RefundOut(RefundSummary):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.REFUND))

    approvals: list[str] = Field(default=[], description="who approved so far")
    timeline: list[TimelineEntry] = Field(default=[], description="every decision and status change")


class RefundList(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples({"data": [ex.REFUND_SUMMARY], "has_more": False}))

    data: list[RefundSummary]
    has_more: bool


class SubscriptionState(BaseModel):
    """What was asked of the payment's subscription and what the provider did, as intake heard it."""

    cancel_requested_at: datetime | None = Field(
        description="when a cancel now was asked, until the provider refuses it"
    )
    cancel_at_period_end_requested_at: datetime | None = Field(
        description="when a cancel at the period's end was asked, until the provider refuses it"
    )
    cancel_failed_at: datetime | None = Field(description="the provider's latest refusal to cancel, until asked again")
    cancel_failure: str | None = Field(description="why the provider refused that cancel, as it said it")
    canceled_at: datetime | None = Field(description="when the provider cancelled the subscription")
    access_until: datetime | None = Field(description="cancelled at the period's end: when access ends")
    extended_to: datetime | None = Field(description="the period end the latest goodwill extension moved it to")
    extension_pending_days: int | None = Field(
        description="goodwill days granted that the provider has neither made nor refused yet"
    )
    extension_failed_at: datetime | None = Field(
        description="the provider's latest refusal of an extension, until another is granted"
    )
    extension_failure: str | None = Field(description="why the provider refused that extension, as it said it")


class ExternalRefund(BaseModel):
    """A refund of the payment made outside Refundflow (in the provider's dashboard, say), as the processor's sync
    found it at the provider: counted in the payment's refunded amount and the balance while it has not failed."""

    provider_refund_id: str = Field(description="the payment provider's id of the refund (Stripe's re_...)")
    amount: MinorUnitsOut
    currency: str
    status: Literal["pending", "succeeded", "failed"] = Field(description="as the provider last reported it")
    detected_at: datetime = Field(description="when intake first heard of it")
    updated_at: datetime = Field(description="when its status last changed")


class PaymentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.PAYMENT))

    id: str
    status: PaymentStatus
    customer_email: str
    customer_name: str | None
    amount: MinorUnitsOut
    currency: str
    refunded_amount: MinorUnitsOut
    refundable_amount: MinorUnitsOut
    provider_payment_id: str
    paid_at: datetime
    product: Product
    subscription: SubscriptionPeriod | None
    subscription_state: SubscriptionState | None = Field(description="for a subscription: its cancel and extensions")
    disputed: bool
    created_at: datetime
    refunds: list[RefundSummary] = []
    external_refunds: list[ExternalRefund] = Field(
        default=[], description="refunds made outside Refundflow (in the provider's dashboard, say), oldest first"
    )


class PaymentList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=ex.examples(
            {"data": [{**ex.PAYMENT, "refunds": [], "external_refunds": []}], "has_more": True}
        )
    )

    data: list[PaymentOut] = Field(
        description="newest first; refunds (and external refunds) are listed on GET /v1/payments/{id}"
    )
    has_more: bool


class RefundPolicyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.POLICY))

    policy: RefundPolicy
    product_overrides: dict[str, RefundPolicyOverride]


class PublicRefundPolicy(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.PUBLIC_POLICY))

    merchant_id: str
    product_id: str | None = Field(
        description="the product whose override this is; null: the merchant's policy, which is every other product's"
    )
    refund_window_days: int
    excluded_categories: list[str]
    accepted_reasons: list[str]
    process_time: str
    text: str = Field(description="the policy in plain words, for checkout and product pages")


class BalanceLine(BaseModel):
    currency: str
    paid: int = Field(description="payments received, in minor units")
    refunded: int = Field(
        description="refunds that reached customers (reversals and external refunds counted), in minor units"
    )
    held: int = Field(
        description="approved refunds (and pending external ones) awaiting the provider's answer, in minor units"
    )
    available: int = Field(description="paid - refunded - held, in minor units")


class BalanceDisputes(BaseModel):
    currency: str
    disputed_payments: int = Field(description="the merchant's payments in this currency a dispute names")
    disputed: int = Field(
        description="what those payments amount to, in minor units: still counted in available (see disputes)"
    )


class Balance(BaseModel):
    """The balance is the ledger's, and disputes never reach the ledger: a payment disputed (a chargeback, the money
    taken back by the provider) still counts in ``available``. ``disputes`` says what they amount to."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.BALANCE))

    data: list[BalanceLine]
    disputes: list[BalanceDisputes] = Field(
        description="per currency with any, the merchant's disputed payments (matched by our payment id, the"
        " provider's or billing's id for it) and their amount; the balance does not account for disputes or"
        " chargebacks: available is not lowered by them"
    )


class BalanceEntry(BaseModel):
    """One movement of the balance, as the ledger booked it."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.BALANCE_ENTRY))

    id: str = Field(description="the entry's id, for starting_after")
    kind: Literal[
        "payment",
        "refund_hold",
        "refund_release",
        "refund",
        "refund_reversal",
        "external_refund_hold",
        "external_refund_release",
        "external_refund",
        "external_refund_reversal",
    ] = Field(
        description="payment: a payment received; refund_hold: an approved refund's amount held until the provider"
        " answers; refund_release: the hold let go (the refund succeeded, failed or was reversed); refund: a refund"
        " that reached the customer; refund_reversal: such a refund failed later, its money back; external_*: the"
        " same for a refund made at the provider outside Refundflow"
    )
    amount: int = Field(description="signed minor units: what the entry adds to available (negative: taken out)")
    currency: str
    payment_id: str = Field(description="our payment the entry is for")
    refund_id: str | None = Field(description="our refund, for a refund's entries")
    provider_refund_id: str | None = Field(
        description="the provider's refund (Stripe's re_...): an external refund's entries, and a refund's or its"
        " reversal's once the provider made it"
    )
    created_at: datetime = Field(description="when the ledger booked it")


class BalanceEntryList(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples({"data": [ex.BALANCE_ENTRY], "has_more": True}))

    data: list[BalanceEntry] = Field(description="newest first")
    has_more: bool
