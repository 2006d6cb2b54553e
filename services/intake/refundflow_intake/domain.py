"""Refund rules: statuses, transitions and what may be refunded. No I/O here."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal

from refundflow_shared import stripe_amounts, stripe_ids
from refundflow_shared.events import RefundReason as RefundReason  # the contract's: refund.submit gives one too
from refundflow_shared.money import format_amount


class RefundStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    REVERSED = "reversed"


# pending -> processing -> succeeded | failed, or pending -> rejected; a succeeded refund the provider later
# failed (a closed card, say) becomes reversed. Nothing else.
ALLOWED_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.PENDING: frozenset({RefundStatus.PROCESSING, RefundStatus.REJECTED}),
    RefundStatus.PROCESSING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    RefundStatus.SUCCEEDED: frozenset({RefundStatus.REVERSED}),
    RefundStatus.FAILED: frozenset(),
    RefundStatus.REJECTED: frozenset(),
    RefundStatus.REVERSED: frozenset(),
}

# Refunds that hold part of the payment: what they ask for can no longer be asked for again.
HOLDING_STATUSES = (RefundStatus.PENDING, RefundStatus.PROCESSING, RefundStatus.SUCCEEDED)
# Refunds approved, whatever the provider did since.
APPROVED_STATUSES = (RefundStatus.PROCESSING, RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.REVERSED)
# Refunds approved and not failed or reversed: the money is on its way to the customer or there.
REFUNDING_STATUSES = (RefundStatus.PROCESSING, RefundStatus.SUCCEEDED)


class DomainError(Exception):
    """A rule said no. ``code`` is stable: clients branch on it."""

    code = "domain_error"
    # False: no API answer carries it (a page's or a command's own, or the API's schema refuses first), so the API
    # documents no such code.
    in_api: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, str] = {}  # more fields of the API's error body, for clients to read


class NotFound(DomainError):
    code = "not_found"


class PaymentNotFound(NotFound):
    code = "payment_not_found"


class RefundNotFound(NotFound):
    code = "refund_not_found"


class RefundExceedsRefundable(DomainError):
    code = "refund_exceeds_refundable"


def refund_exceeds_refundable_message(amount: int, left: int, currency: str) -> str:
    """Said to people, who read and type major units: ``€40.01 exceeds the refundable amount of €40.00``."""
    return f"{format_amount(amount, currency)} exceeds the refundable amount of {format_amount(left, currency)}"


class InvalidAmount(DomainError):
    """No amount: typed unreadably in a page, or 0 from a page or a command (the API's schema refuses 0 first)."""

    code = "invalid_amount"
    in_api = False


class AmountNotRepresentable(DomainError):
    """The provider cannot refund the amount exactly (Stripe takes KWD only in whole tens of fils, MGA in whole
    ariary): refused when asked, not failed at the provider after the approval."""

    code = "amount_not_representable"


def provider_step(currency: str) -> int:
    """The smallest amount, in ISO minor units, the provider refunds in ``currency``: it takes only whole multiples."""
    return stripe_amounts.stripe_step(currency)


def check_provider_can_refund(amount: int, currency: str) -> None:
    """Raises ``AmountNotRepresentable`` unless the provider can refund ``amount`` of ``currency`` exactly. The
    provider is Stripe, the processor's one adapter: its table (``refundflow_shared.stripe_amounts``) decides. Said
    in money, as merchants and their clients' people read and type amounts: ``KWD 1.255``, not 1255 minor units."""
    try:
        stripe_amounts.to_stripe_units(amount, currency)
    except stripe_amounts.AmountNotRepresentable:
        step = format_amount(provider_step(currency), currency)
        raise AmountNotRepresentable(
            f"Stripe takes {currency} only in steps of {step}: {format_amount(amount, currency)} is not one"
        ) from None


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"


class InvalidTransition(DomainError):
    code = "invalid_status_transition"

    def __init__(self, message: str, *, current_status: RefundStatus) -> None:
        super().__init__(message)
        self.current_status = current_status
        self.extra = {"current_status": current_status.value}


class DuplicatePayment(DomainError):
    """The merchant's provider payment is already registered, with other details."""

    code = "payment_already_registered"


class UnsupportedProviderPayment(DomainError):
    """A provider payment id the provider's refunds cannot name (Stripe refunds a payment intent, pi_..., or a
    charge, ch_... or py_...): every refund of it would fail at the provider after its approval."""

    code = "provider_payment_id_unsupported"


def check_provider_payment_id(provider_payment_id: str) -> None:
    """The registration's and billing's payment.succeeded's rule, which the processor applies too."""
    try:
        stripe_ids.check_refundable_at_stripe(provider_payment_id)
    except stripe_ids.UnsupportedProviderPayment as exc:
        raise UnsupportedProviderPayment(str(exc)) from None


class ProviderPaymentTaken(DomainError):
    """Another merchant registered this provider payment: it is theirs to refund."""

    code = "provider_payment_already_registered"


class ProviderPaymentConflict(DomainError):
    """Registered before provider payments were unique, by more than one merchant: no money moves on it until
    the platform settles whose it is."""

    code = "provider_payment_conflict"


class PlatformOnly(DomainError):
    """A platform call (admin token) made with a merchant's API key."""

    code = "platform_only"


class LastApiKey(DomainError):
    code = "last_api_key"


class TooManyApiKeys(DomainError):
    """A merchant's live keys are capped: every one is listed, and each is one more credential that works."""

    code = "too_many_api_keys"


class MerchantNotFound(NotFound):
    code = "merchant_not_found"


class PolicyOverrideNotFound(NotFound):
    code = "policy_override_not_found"


class TooManyProductOverrides(DomainError):
    """Every read and save of the policy answers all of a merchant's overrides: their number is capped."""

    code = "too_many_product_overrides"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class PaymentIsDisputed(DomainError):
    code = "payment_disputed"


class OpenRequestExists(DomainError):
    code = "open_request_exists"


class ReasonDetailsRequired(DomainError):
    code = "reason_details_required"


class InvalidPeriod(DomainError):
    code = "invalid_period"


class InvalidCursor(DomainError):
    code = "invalid_cursor"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class IdempotencyKeyRequired(DomainError):
    """A create that moves money is asked once per key: without one, a retried request would make it twice."""

    code = "idempotency_key_required"


class IdempotencyKeyBlank(DomainError):
    """An empty key, or one of spaces only, names no request: every client sending it would share one."""

    code = "idempotency_key_blank"


class InvalidProration(DomainError):
    code = "invalid_proration"


class ApprovalExceedsRequest(DomainError):
    code = "approval_exceeds_request"


class NotASubscription(DomainError):
    code = "not_a_subscription"


class ExtensionConflictsWithCancel(DomainError):
    """A goodwill extension of a subscription that is cancelled now: there would be no period to extend."""

    code = "extension_conflicts_with_cancel"


class PortalDisabled(DomainError):
    """The merchant switched its customer portal off: no links, no requests through it."""

    code = "portal_disabled"


class SecondApprovalNeedsAPerson(DomainError):
    """Approvals count people: an API key may give a first approval, never the one that completes a rule
    asking for two approvers."""

    code = "second_approval_needs_a_person"


class InvalidSubscriptionAction(DomainError):
    """A choice the dashboard's form does not offer (the API's schema refuses it before any use case)."""

    code = "invalid_subscription_action"
    in_api = False


class ApiKeysManagedByOwners(DomainError):
    """The merchant has owners: its API keys are created and revoked by them, in the dashboard."""

    code = "api_keys_managed_by_owners"


class ApprovalRulesManagedByOwners(DomainError):
    """The merchant has owners: its approval rules (the two-person rule, auto-approval) are changed by them, in the
    dashboard, so that one key cannot switch the two-person rule off and approve alone."""

    code = "approval_rules_managed_by_owners"


class AutoApproveReasonNotAccepted(DomainError):
    """An automatic-approval rule names a reason the policy (a product's: its override on the merchant's) does not
    accept: a request for it is flagged, and a flagged request is never approved automatically."""

    code = "auto_approve_reason_not_accepted"


class OutboundUrlNotAllowed(DomainError):
    """A webhook or Slack URL we would never call: not http(s), or not a public address."""

    code = "url_not_allowed"


class Channel(StrEnum):
    """Where a request came from. Customer channels may hold only one open request per payment."""

    API = "api"
    PORTAL = "portal"
    COMMAND = "command"


# Requests the customer made: they are told of the decision; the merchant's own (the API) tell the customer nothing.
CUSTOMER_CHANNELS = (Channel.PORTAL.value, Channel.COMMAND.value)


class SubscriptionAction(StrEnum):
    REFUND_AND_CANCEL = "refund_and_cancel"
    REFUND_ONLY = "refund_only"
    CANCEL_ONLY = "cancel_only"


def stated_details(reason: RefundReason, details: str | None) -> str | None:
    """A request's details as kept: without the spaces around them, None when nothing is left. Reason ``other`` says
    nothing without them (ReasonDetailsRequired): spaces alone are none."""
    kept = details.strip() if details else None
    if reason is RefundReason.OTHER and not kept:
        raise ReasonDetailsRequired("reason 'other' needs reason_details saying why")
    return kept or None


def holds_control_characters(text: str) -> bool:
    """Whether free text (a customer's details, a note) holds a control character other than a line break or a
    tab: a NUL cannot be stored at all, and the others are no one's typing."""
    return any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in text)


def refundable_amount(payment_amount: int, held_by_refunds: int) -> int:
    """What can still be asked for: the payment minus every pending, processing or succeeded refund."""
    return max(payment_amount - held_by_refunds, 0)


PaymentStatus = Literal["paid", "partially_refunded", "refunded"]


def payment_status(amount: int, refunded_amount: int) -> PaymentStatus:
    if refunded_amount == 0:
        return "paid"
    return "refunded" if refunded_amount >= amount else "partially_refunded"


@dataclass(frozen=True)
class RefundRequest:
    payment_amount: int
    payment_currency: str
    held_by_refunds: int

    def decide_amount(self, requested: int | None, currency: str | None) -> int:
        """The amount to refund: the request's, or all that is left. Raises when a hard rule says no."""
        if currency is not None and currency.upper() != self.payment_currency:
            raise CurrencyMismatch(f"the payment is in {self.payment_currency}, not {currency.upper()}")
        if requested is not None and requested <= 0:
            raise InvalidAmount(f"a refund is of at least 1 minor unit, not {requested}")
        left = refundable_amount(self.payment_amount, self.held_by_refunds)
        amount = left if requested is None else requested
        if amount <= 0 or amount > left:
            raise RefundExceedsRefundable(refund_exceeds_refundable_message(amount, left, self.payment_currency))
        check_provider_can_refund(amount, self.payment_currency)
        return amount


@dataclass(frozen=True)
class ExternalRefundChange:
    """What a provider's report about a refund made outside Refundflow moves: each at most once."""

    hold: bool  # pending: the amount can no longer be asked for, and is held in the balance
    release: bool  # no longer pending: the hold goes
    debit: bool  # succeeded: refunded for good
    credit_back: bool  # succeeded, then failed: the refunded amount comes back


_EXTERNAL_REFUND_CHANGES: dict[tuple[str | None, str], ExternalRefundChange] = {
    (None, "pending"): ExternalRefundChange(hold=True, release=False, debit=False, credit_back=False),
    (None, "succeeded"): ExternalRefundChange(hold=False, release=False, debit=True, credit_back=False),
    (None, "failed"): ExternalRefundChange(hold=False, release=False, debit=False, credit_back=False),
    ("pending", "succeeded"): ExternalRefundChange(hold=False, release=True, debit=True, credit_back=False),
    ("pending", "failed"): ExternalRefundChange(hold=False, release=True, debit=False, credit_back=False),
    ("succeeded", "failed"): ExternalRefundChange(hold=False, release=False, debit=False, credit_back=True),
}


def external_refund_change(before: str | None, reported: str) -> ExternalRefundChange | None:
    """The change a report makes (``before`` None: first seen); None for a repeat or a report going backwards."""
    return _EXTERNAL_REFUND_CHANGES.get((before, reported))


def check_transition(current: RefundStatus, target: RefundStatus) -> bool:
    """True when the transition applies, False when it is a repeat (idempotent); raises otherwise."""
    if current == target:
        return False
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"a {current.value} refund cannot become {target.value}", current_status=current)
    return True
