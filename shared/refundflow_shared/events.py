"""The event contract: every event Refundflow emits or consumes, defined once.

One topic per event type, named as the type (optionally prefixed, for tests and shared clusters).
Kafka key = payment id, so all events of one payment stay in one partition, in order.
The envelope is CloudEvents 1.0 in Kafka binary mode: attributes as ``ce_*`` headers, JSON data.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from refundflow_shared import money
from refundflow_shared.money import CURRENCY_EXPONENTS, MinorUnits, RefundMinorUnits

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/json"

# Every string in the contract is bounded, so that no event can outgrow the broker's message size.
Id = Annotated[str, Field(min_length=1, max_length=255)]
# The contract lists the codes (the AsyncAPI document's enum); the decoder takes them in small letters too.
Currency = Annotated[money.Currency, Field(json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)})]
Code = Annotated[str, Field(min_length=1, max_length=100)]
Name = Annotated[str, Field(max_length=200)]
NOTE_MAX_LENGTH = 2000  # a free text's bound: a producer quoting text it does not control cuts it to this
Note = Annotated[str, Field(max_length=NOTE_MAX_LENGTH)]
EmailAddress = Annotated[str, Field(max_length=320)]
Url = Annotated[str, Field(max_length=2048)]


class EventType(StrEnum):
    PAYMENT_SUCCEEDED = "payment.succeeded"
    REFUND_REQUESTED = "refund.requested"
    REFUND_APPROVED = "refund.approved"
    REFUND_REJECTED = "refund.rejected"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    PAYMENT_REFUNDED = "payment.refunded"
    SUBSCRIPTION_CANCEL_REQUESTED = "subscription.cancel_requested"
    SUBSCRIPTION_CANCELED = "subscription.canceled"
    SUBSCRIPTION_CANCEL_FAILED = "subscription.cancel_failed"
    REFUND_EXTERNAL_DETECTED = "refund.external_detected"
    PROVIDER_UNAVAILABLE = "provider.unavailable"
    PAYMENT_DISPUTED = "payment.disputed"
    SUBSCRIPTION_EXTENSION_GRANTED = "subscription.extension_granted"
    SUBSCRIPTION_EXTENDED = "subscription.extended"
    SUBSCRIPTION_EXTENSION_FAILED = "subscription.extension_failed"
    REFUND_SUBMIT = "refund.submit"
    REFUND_SUBMIT_REJECTED = "refund.submit_rejected"
    REFUND_REVIEW_OVERDUE = "refund.review_overdue"
    REFUND_REVERSED = "refund.reversed"
    TEAM_ALERT_RAISED = "team_alert.raised"
    WEBHOOK_ENDPOINT_CONFIGURED = "webhook_endpoint.configured"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    NOTIFICATION_SETTINGS_CONFIGURED = "notification_settings.configured"
    TEAM_MEMBER_INVITED = "team_member.invited"
    PASSWORD_RESET_REQUESTED = "password_reset.requested"  # noqa: S105 - an event type
    CUSTOMER_ERASED = "customer.erased"


class EventData(BaseModel):
    """Base of every event payload. Every event belongs to one merchant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[EventType]
    schema_version: ClassVar[int] = 1

    merchant_id: Id

    @classmethod
    def dataschema(cls) -> str:
        return f"urn:refundflow:{cls.event_type.value}:v{cls.schema_version}"

    def partition_key(self) -> str:
        """The Kafka key: events with the same key stay in order. Payment events use the payment id."""
        return self.merchant_id

    def subject(self) -> str:
        return self.partition_key()


class PaymentEventData(EventData):
    """An event about one payment: keyed, ordered and sequenced by the payment id."""

    payment_id: Id

    def partition_key(self) -> str:
        return self.payment_id


class _Priced(PaymentEventData):
    amount: MinorUnits
    currency: Currency


class _RefundPriced(_Priced):
    amount: RefundMinorUnits  # the databases refuse a refund of 0 too: refused here, it is named validation_failed


class Product(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["one_time", "subscription"]
    category: Code | None = Field(default=None, description="e.g. digital, service, consumable, customized")


class SubscriptionPeriod(BaseModel):
    """The subscription a payment paid for, and the period it paid for (its end after its start)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    current_period_start: AwareDatetime
    current_period_end: AwareDatetime

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> Self:
        if self.current_period_end <= self.current_period_start:
            raise ValueError("current_period_end must be after current_period_start")
        return self


# How far ahead of ours a payment's time may be (billing's clock): more is an error, not skew. A payment dated in
# the future would open its refund window late and keep it open as long again.
CLOCK_SKEW = timedelta(minutes=5)


def not_in_the_future(moment: datetime) -> datetime:
    if moment > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return moment


PaidAt = Annotated[AwareDatetime, AfterValidator(not_in_the_future)]


class PaymentSucceeded(_Priced):
    event_type = EventType.PAYMENT_SUCCEEDED

    customer_email: EmailAddress
    provider_payment_id: Id = Field(
        description="a Stripe payment intent (pi_...) or charge (ch_..., py_...), the only payments a refund can name;"
        " consumers dead-letter another (UnsupportedProviderPayment) unless the amount is 0"
    )
    paid_at: PaidAt
    product: Product
    customer_name: Name | None = None
    subscription: SubscriptionPeriod | None = None


class PaymentDisputed(PaymentEventData):
    """The customer disputed the payment (a chargeback): no further refunds may be made on it."""

    event_type = EventType.PAYMENT_DISPUTED

    dispute_id: Id | None = None
    reason: Name | None = None


# An email offers no link that stops working this soon after it is sent (it says the link expired instead): links
# must be minted to live longer (intake's PORTAL_TOKEN_TTL_HOURS).
LINK_MARGIN = timedelta(hours=1)


class PortalLink(BaseModel):
    """The customer's link to the portal page of one payment, and until when it works.

    The link is a credential (whoever holds it may ask for refunds of the payment): it travels sealed
    (``secret_box``, bound to the payment id), and only intake and the notifier can open it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sealed_url: Annotated[str, Field(max_length=4000)]
    expires_at: datetime


class _ToCustomer(BaseModel):
    """What the customer's email about the event needs: the merchant's name and the link to the portal page
    (absent when the merchant switched its portal off). Intake sets them; the processor carries those of the
    decision onto the outcomes it publishes (events of one payment may reach the notifier in any order across
    topics, so each carries its own); the notifier also keeps the freshest link per payment."""

    merchant_name: Name | None = None
    portal_link: PortalLink | None = None


# Fields only Refundflow's services read, never sent in a merchant's webhook: the portal link is the customer's
# credential (only intake and the notifier may open it).
NOT_IN_WEBHOOKS = frozenset({"portal_link"})


class _RefundEvent(PaymentEventData):
    refund_id: Id
    customer_email: EmailAddress

    def subject(self) -> str:
        return self.refund_id


# Whether the customer asked (and was told their request was received); None in events from before it was said.
_ASKED_THROUGH = "as refund.requested said it: api (the merchant), portal or command (the customer)"
_KEPT = "the customer asked to cancel their subscription too, and this decision leaves it running"


class RefundRequested(_RefundPriced, _RefundEvent, _ToCustomer):
    event_type = EventType.REFUND_REQUESTED

    reason: Code
    channel: Code | None = Field(default=None, description="api, portal (the customer) or command (refund.submit)")
    auto_approved: bool = Field(default=False, description="the merchant's rules approved it as it was made")


class RefundApproved(_RefundPriced, _RefundEvent, _ToCustomer):
    event_type = EventType.REFUND_APPROVED

    provider_payment_id: Id
    payment_amount: MinorUnits
    approved_by: Name
    requested_amount: MinorUnits | None = Field(default=None, description="what was asked for, when more")
    note_to_customer: Note | None = None
    process_time: Name | None = Field(default=None, description="the refund policy's: how long the money takes")
    channel: Code | None = Field(default=None, description=_ASKED_THROUGH)
    auto_approved: bool = Field(default=False, description="the merchant's rules approved it as it was made")
    subscription_continues: bool = Field(default=False, description=_KEPT)


class RefundRejected(_RefundEvent, _ToCustomer):
    event_type = EventType.REFUND_REJECTED

    note: Note | None = None
    cancel_only: bool = Field(default=False, description="no refund, the subscription ends at the period's end")
    cancellation_follows: bool = Field(
        default=True,
        description="with cancel_only: subscription.canceled follows (it tells the customer); false when the"
        " subscription was cancelled, or asked to be, already (this tells them)",
    )
    channel: Code | None = Field(default=None, description=_ASKED_THROUGH)
    subscription_continues: bool = Field(default=False, description=_KEPT)


class RefundSucceeded(_RefundPriced, _RefundEvent, _ToCustomer):
    event_type = EventType.REFUND_SUCCEEDED

    provider_refund_id: Id
    process_time: Name | None = Field(default=None, description="the refund policy's, as the approval said it")


# refund.failed reasons that mean the payment is disputed with the customer's bank: the dispute, not the merchant,
# decides what is paid back (ours, and Stripe's for a refund pending when the dispute came).
DISPUTED_FAILURE_REASONS = frozenset({"payment_disputed", "charge_for_pending_refund_disputed"})


class RefundFailed(_RefundPriced, _RefundEvent, _ToCustomer):
    event_type = EventType.REFUND_FAILED

    failure_reason: Code
    failure_message: Note | None = None


class RefundReversed(_RefundPriced, _RefundEvent, _ToCustomer):
    """A refund the provider had reported succeeded failed afterwards (a closed card, say): the money did not
    reach the customer after all. Intake restores the refundable amount and the balance."""

    event_type = EventType.REFUND_REVERSED

    provider_refund_id: Id
    failure_reason: Code
    failure_message: Note | None = None


# What the processor carries from a decision (refund.approved, subscription.cancel_requested or
# subscription.extension_granted) onto the outcome it publishes, for the customer's email: opaque to it.
CUSTOMER_FIELDS = (
    "customer_email",
    "merchant_name",
    "portal_link",
    "process_time",
    "note_to_customer",
    "last_period",
    "no_refund",
    "channel",
)


def customer_fields(data: EventData, *, besides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``data`` the outcome's email needs (but ``besides``), as JSON, for the processor to keep."""
    wanted = set(CUSTOMER_FIELDS) & set(type(data).model_fields) - set(besides)
    return data.model_dump(mode="json", include=wanted, exclude_none=True)


def carry(kept: dict[str, Any], to: type[EventData]) -> dict[str, Any]:
    """The kept fields that the outcome event ``to`` has."""
    return {name: value for name, value in kept.items() if name in to.model_fields}


class PaymentRefunded(_RefundPriced):
    """A refund of ``amount`` reached the customer; totals are after this refund."""

    event_type = EventType.PAYMENT_REFUNDED

    refund_id: Id
    refunded_amount: MinorUnits
    remaining_amount: MinorUnits


_NO_REFUND = "a cancel-only decision: no money moved, and the customer hears it with the cancellation"
_AFTER_EXTENSION = (
    "the same decision (refund_id) granted goodwill days first (carried from subscription.cancel_requested): the"
    " customer hears of them before the cancellation"
)
_ALREADY_ENDED = (
    "the provider had ended the subscription before this cancel was asked (it could not be cancelled again):"
    " ends_at is when it ended, if known"
)


class SubscriptionCancelRequested(PaymentEventData, _ToCustomer):
    """Cancel the subscription the payment paid for: now, or at the end of the current period."""

    event_type = EventType.SUBSCRIPTION_CANCEL_REQUESTED

    subscription_id: Id
    at_period_end: bool
    refund_id: Id | None = None
    after_extension: bool = Field(
        default=False,
        description="the same decision (refund_id) granted an extension: cancel once it is done, so that the access"
        " end told is the extended one",
    )
    requested_by: Name
    customer_email: EmailAddress | None = None
    note_to_customer: Note | None = None
    no_refund: bool = Field(False, description=_NO_REFUND)
    channel: Code | None = Field(default=None, description=_ASKED_THROUGH + " (the decision's refund)")


class SubscriptionCanceled(PaymentEventData, _ToCustomer):
    """The provider canceled the subscription (``at_period_end``: access lasts until ``ends_at``)."""

    event_type = EventType.SUBSCRIPTION_CANCELED

    subscription_id: Id
    at_period_end: bool
    ends_at: datetime | None = None
    refund_id: Id | None = None
    customer_email: EmailAddress | None = None
    note_to_customer: Note | None = None
    no_refund: bool = Field(False, description=_NO_REFUND + " (carried from subscription.cancel_requested)")
    already_ended: bool = Field(False, description=_ALREADY_ENDED)
    after_extension: bool = Field(False, description=_AFTER_EXTENSION)
    channel: Code | None = Field(default=None, description=_ASKED_THROUGH + " (the decision's refund)")


class SubscriptionCancelFailed(PaymentEventData, _ToCustomer):
    """The provider refused to cancel the subscription (the team is alerted: the customer may still be billed).
    Intake forgets that this cancel was asked, so that asking it again asks the provider again. What the cancel
    request said to the customer is carried only when the provider refused it: the customer is told."""

    event_type = EventType.SUBSCRIPTION_CANCEL_FAILED

    subscription_id: Id
    at_period_end: bool
    refund_id: Id | None = None
    reason: Note = Field(description="the provider's refusal, as it said it")
    customer_email: EmailAddress | None = None
    note_to_customer: Note | None = None
    no_refund: bool = Field(False, description=_NO_REFUND + " (carried from subscription.cancel_requested)")
    after_extension: bool = Field(False, description=_AFTER_EXTENSION)
    channel: Code | None = Field(default=None, description=_ASKED_THROUGH + " (the decision's refund)")


# How a refund made outside Refundflow moves as the provider reports it. A report of any other move is older than
# what is known (a webhook redelivered out of order, a scan listed before the last change): it changes nothing.
EXTERNAL_REFUND_MOVES = frozenset({("pending", "succeeded"), ("pending", "failed"), ("succeeded", "failed")})


class RefundExternalDetected(_Priced):
    """A refund made outside Refundflow (e.g. in the provider's dashboard), found by the sync job."""

    event_type = EventType.REFUND_EXTERNAL_DETECTED

    provider_refund_id: Id
    provider_payment_id: Id
    status: Literal["succeeded", "pending", "failed"]


class ProviderUnavailable(PaymentEventData):
    """A team alert: the provider could not be reached within the retry budget; the refund failed."""

    event_type = EventType.PROVIDER_UNAVAILABLE

    refund_id: Id
    provider: Code
    attempts: int = Field(ge=0, le=1_000_000)
    last_error: Note


# A cancel-only decision with goodwill days: the extended period is the subscription's last (the customer is told
# when access ends, not when the next payment is due).
_LAST_PERIOD = "the same decision cancels the subscription at the period's end: no payment follows the extension"


class SubscriptionExtensionGranted(PaymentEventData, _ToCustomer):
    """A goodwill extension: the subscription's current period is extended by ``days`` (the processor moves it
    at the provider, then publishes ``subscription.extended``)."""

    event_type = EventType.SUBSCRIPTION_EXTENSION_GRANTED

    subscription_id: Id
    days: int = Field(gt=0, le=365)
    refund_id: Id | None = None
    granted_by: Name
    customer_email: EmailAddress | None = None
    last_period: bool = Field(False, description=_LAST_PERIOD)


class SubscriptionExtended(PaymentEventData, _ToCustomer):
    """The provider moved the subscription's period end by ``days``: the customer is billed next at
    ``current_period_end``."""

    event_type = EventType.SUBSCRIPTION_EXTENDED

    subscription_id: Id
    days: int = Field(gt=0, le=365)
    current_period_end: datetime
    refund_id: Id | None = None
    customer_email: EmailAddress | None = None
    last_period: bool = Field(False, description=_LAST_PERIOD)


class SubscriptionExtensionFailed(PaymentEventData):
    """The provider refused a goodwill extension (the team is alerted; the customer was told nothing): the period
    ends, and the next payment is due, as before."""

    event_type = EventType.SUBSCRIPTION_EXTENSION_FAILED

    subscription_id: Id
    days: int = Field(gt=0, le=365)
    refund_id: Id | None = None
    reason: Note = Field(description="why the provider refused, as it said it")


class CustomerErased(PaymentEventData):
    """The merchant erased the personal data of the payment's customer (GDPR Art. 17): every service overwrites its
    copies for this payment (address, name, the customer's words, notes to them, links) and keeps ids and amounts.
    One per payment, keyed by it, so it follows the payment's earlier events; it names no address."""

    event_type = EventType.CUSTOMER_ERASED

    erasure_id: Id = Field(description="the erasure (POST /v1/customers/erase) that erased this payment's customer")


# What an erasure overwrites in an event kept for a payment (an outbox row, a webhook event): the address becomes ''
# (some events require one: '' is the address erased, never a real one), the rest is left out.
ERASED_ADDRESS = ""
ERASED_FIELDS = ("customer_name", "reason_details", "note", "note_to_customer", "portal_link")


def erased_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An event's JSON data with the customer's personal data erased (ids, amounts and statuses kept)."""
    kept = {name: value for name, value in payload.items() if name not in ERASED_FIELDS}
    if "customer_email" in kept:
        kept["customer_email"] = ERASED_ADDRESS
    return kept


class WebhookEndpointConfigured(EventData):
    """A merchant's webhook endpoint as it now is (full state; ``deleted`` once removed). Keyed by merchant.

    The signing secret travels encrypted (``refundflow_shared.secret_box``, bound to the endpoint id):
    topics are readable by many, the secret only by the services that hold the key.
    """

    event_type = EventType.WEBHOOK_ENDPOINT_CONFIGURED

    endpoint_id: Id
    url: Url
    event_types: list[Code] = Field(max_length=32)
    enabled: bool
    deleted: bool = False
    encrypted_secret: Annotated[str, Field(max_length=1000)]
    version: int = Field(ge=1, le=2**31 - 1, description="grows with every change; older versions are ignored")
    previous_encrypted_secret: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="the secret before the merchant rolled it, sealed: it signs too until the overlap ends"
    )
    previous_secret_expires_at: datetime | None = Field(None, description="when the previous secret stops signing")


class WebhookEndpointDisabled(EventData):
    """The notifier stopped delivering to an endpoint (it answered 410, or N events in a row failed). Keyed by
    merchant. ``version`` is the configuration it disabled: one the merchant has changed since does not take it."""

    event_type = EventType.WEBHOOK_ENDPOINT_DISABLED

    endpoint_id: Id
    reason: Name
    version: int = Field(ge=1, le=2**31 - 1)


class NotificationSettingsConfigured(EventData):
    """Where a merchant's team alerts go, and how its customer emails present the merchant.

    The Slack webhook URL is a credential: it travels sealed (``secret_box``, bound to the merchant id)."""

    event_type = EventType.NOTIFICATION_SETTINGS_CONFIGURED

    team_email: EmailAddress | None = None
    sealed_slack_webhook_url: Annotated[str, Field(max_length=4000)] | None = None
    sender_name: Name | None = None
    reply_to: EmailAddress | None = None
    review_target: Name | None = None
    refund_process_time: Name | None = None
    portal_enabled: bool | None = Field(
        default=None,
        description="whether the merchant's customer portal is on: off, customer emails carry no link (not even the"
        " one an outcome carries from its decision); None from an intake before it said, which changes nothing",
    )


class SubmittedProration(BaseModel):
    """A share of the payment by days: ``unused_days`` or ``affected_days`` out of ``period_days`` (default:
    the subscription's current period)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unused_days: int | None = Field(default=None, gt=0, le=3660)
    affected_days: int | None = Field(default=None, gt=0, le=3660)
    period_days: int | None = Field(default=None, gt=0, le=3660)


class RefundReason(StrEnum):
    """Why a refund is asked for: the API's, the portal's and ``refund.submit``'s reasons (intake's one list)."""

    PRODUCT_NOT_AS_DESCRIBED = "product_not_as_described"
    TECHNICAL_ISSUE = "technical_issue"
    SERVICE_DISRUPTION = "service_disruption"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    UNEXPECTED_RENEWAL = "unexpected_renewal"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    OTHER = "other"


# The codes intake answers a refund.submit with in refund.submit_rejected, and what the sender does about each (any
# refusal is final: a command is never taken up again by itself). intake's tests keep each a code it refuses with.
FIX_AND_RESEND = "fix the command and send it again"
REFUND_SUBMIT_REFUSALS: dict[str, str] = {
    "invalid_reason": FIX_AND_RESEND,
    "reason_details_required": FIX_AND_RESEND,
    "invalid_text": FIX_AND_RESEND,
    "invalid_amount": FIX_AND_RESEND,
    "invalid_proration": FIX_AND_RESEND,
    "currency_mismatch": FIX_AND_RESEND,
    "amount_not_representable": FIX_AND_RESEND,
    "merchant_not_found": FIX_AND_RESEND,
    "payment_not_found": FIX_AND_RESEND + " (or once billing's payment.succeeded for it is sent)",
    "idempotency_key_reused": FIX_AND_RESEND + " under a new idempotency_key (the key named another request)",
    "refund_exceeds_refundable": "the payment's state: nothing (or less) is left to refund",
    "open_request_exists": "the payment's state: resend once its open request is decided",
    "payment_disputed": "the payment's state: refunds are blocked while it is disputed",
    "provider_payment_conflict": "the payment's state: its provider payment is another merchant's too (the platform's"
    " to settle)",
}


class RefundSubmit(PaymentEventData):
    """A command from another platform service: ask for a refund as ``POST /v1/refunds`` would.

    ``idempotency_key`` makes a re-sent command create nothing new. ``reason`` is checked by intake, so that a
    wrong one is answered with ``refund.submit_rejected`` rather than only dead-lettered.
    """

    event_type = EventType.REFUND_SUBMIT

    idempotency_key: str = Field(min_length=1, max_length=255)
    # Any string is read (and refused as invalid_reason by intake, answered); the document lists those it takes.
    reason: Code = Field(
        description="one of intake's refund reasons; another is refused, refund.submit_rejected invalid_reason",
        json_schema_extra={"enum": [reason.value for reason in RefundReason]},
    )
    reason_details: Note | None = None
    amount: MinorUnits | None = None
    currency: Currency | None = None
    proration: SubmittedProration | None = None
    submitted_by: Name


class RefundSubmitRejected(PaymentEventData):
    """The answer to a ``refund.submit`` that was refused (it is also in ``refund.submit.dlq``)."""

    event_type = EventType.REFUND_SUBMIT_REJECTED

    idempotency_key: Id
    code: Code = Field(
        description="why, a stable code: "
        + "; ".join(f"`{code}`: {what}" for code, what in REFUND_SUBMIT_REFUSALS.items())
        + "; else another of intake's error codes, as its API answers them",
        json_schema_extra={"examples": list(REFUND_SUBMIT_REFUSALS)},
    )
    message: Note


class RefundReviewOverdue(_RefundPriced):
    """A team alert: a refund request waited longer than the merchant's review target (emitted once)."""

    event_type = EventType.REFUND_REVIEW_OVERDUE

    refund_id: Id
    requested_at: datetime
    review_target_hours: int = Field(ge=1, le=100_000)

    def subject(self) -> str:
        return self.refund_id


class TeamAlertRaised(EventData):
    """Something needs a person on the merchant's team: a refund that cannot finish on its own, a fault in the
    configuration, an event that could not be handled. The notifier sends it to the team's channels."""

    event_type = EventType.TEAM_ALERT_RAISED

    kind: Code
    title: Name
    details: dict[Code, Note] = Field(default_factory=dict, max_length=20)
    payment_id: Id | None = None
    refund_id: Id | None = None

    def partition_key(self) -> str:
        return self.payment_id or self.merchant_id


class _AccountLink(EventData):
    """A one-time link for a person on a merchant's team, to be emailed to them.

    The link is a credential (whoever holds it sets the account's password): it travels sealed
    (``secret_box``, bound to the user id), and only intake and the notifier can open it."""

    user_id: Id
    email: EmailAddress
    sealed_url: Annotated[str, Field(max_length=4000)]
    expires_at: datetime


class TeamMemberInvited(_AccountLink):
    """Someone was invited to a merchant's dashboard; the notifier emails them the invite link."""

    event_type = EventType.TEAM_MEMBER_INVITED

    merchant_name: Name
    role: Code
    invited_by: Name | None = None


class PasswordResetRequested(_AccountLink):
    """A person asked to reset their dashboard password; the notifier emails them the link."""

    event_type = EventType.PASSWORD_RESET_REQUESTED


EVENT_DATA_TYPES: dict[str, type[EventData]] = {
    cls.event_type.value: cls
    for cls in (
        PaymentSucceeded,
        RefundRequested,
        RefundApproved,
        RefundRejected,
        RefundSucceeded,
        RefundFailed,
        PaymentRefunded,
        SubscriptionCancelRequested,
        SubscriptionCanceled,
        SubscriptionCancelFailed,
        RefundExternalDetected,
        ProviderUnavailable,
        PaymentDisputed,
        SubscriptionExtensionGranted,
        SubscriptionExtended,
        SubscriptionExtensionFailed,
        CustomerErased,
        RefundSubmit,
        RefundSubmitRejected,
        RefundReviewOverdue,
        RefundReversed,
        TeamAlertRaised,
        WebhookEndpointConfigured,
        WebhookEndpointDisabled,
        NotificationSettingsConfigured,
        TeamMemberInvited,
        PasswordResetRequested,
    )
}


# The events merchants may subscribe their webhook endpoints to: intake offers them, the notifier sends them.
WebhookEventType = Literal[
    "refund.requested",
    "refund.approved",
    "refund.rejected",
    "refund.succeeded",
    "refund.failed",
    "refund.reversed",
    "payment.refunded",
    "subscription.canceled",
    "subscription.cancel_failed",
    "subscription.extended",
    "subscription.extension_failed",
]
WEBHOOK_EVENT_TYPES: tuple[str, ...] = get_args(WebhookEventType)


def topic_for(event_type: EventType | str, prefix: str = "") -> str:
    return f"{prefix}{EventType(event_type).value}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


class Event(BaseModel):
    """A CloudEvents 1.0 envelope around one payload."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: Name
    type: EventType
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: Id
    specversion: Literal["1.0"] = SPEC_VERSION
    dataschema: Name
    sequence: int = Field(ge=1, le=2**63 - 1, description="per payment and source, gap-free, starting at 1")
    data: EventData

    @classmethod
    def wrap(cls, data: EventData, *, source: str, sequence: int) -> Event:
        return cls(
            source=source,
            type=data.event_type,
            subject=data.subject(),
            dataschema=data.dataschema(),
            sequence=sequence,
            data=data,
        )

    @property
    def partition_key(self) -> str:
        return self.data.partition_key()

    def kafka_headers(self) -> dict[str, str]:
        return {
            "ce_specversion": self.specversion,
            "ce_id": str(self.id),
            "ce_source": self.source,
            "ce_type": self.type.value,
            "ce_time": self.time.isoformat(),
            "ce_subject": self.subject,
            "ce_dataschema": self.dataschema,
            "ce_sequence": str(self.sequence),
            "ce_partitionkey": self.partition_key,
            "content-type": CONTENT_TYPE,
        }

    def kafka_value(self) -> bytes:
        return self.data.model_dump_json().encode()

    def webhook_json(self) -> dict[str, Any]:
        """The event as a merchant's webhook carries it: structured mode (attributes and data in one object), the
        data without what is ``NOT_IN_WEBHOOKS``."""
        data = self.data.model_dump(mode="json", exclude=set(NOT_IN_WEBHOOKS))
        return {**self.model_dump(mode="json", exclude={"data"}), "data": data}
