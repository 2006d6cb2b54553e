"""The processor's records, as the repository reads and writes them: typed, frozen, no I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from refundflow_processor.attempts import AttemptState


class RefundStatus(StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The provider failed a refund after it had succeeded: the money did not reach the customer after all.
    REVERSED = "reversed"


@dataclass(frozen=True)
class Payment:
    """A payment the processor knows of: from payment.succeeded (trusted), else from the first approval."""

    payment_id: str
    merchant_id: str
    provider_payment_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class PaidSubscription:
    """Whose payment a payment is, and of which subscription (None: of none), as its payment.succeeded said.
    ``said`` False: learnt before the processor kept the subscription, which it then cannot tell."""

    merchant_id: str
    subscription_id: str | None
    said: bool = True


@dataclass(frozen=True)
class Refund:
    refund_id: str
    payment_id: str
    merchant_id: str
    customer_email: str
    amount: int
    currency: str
    provider_payment_id: str
    payment_amount: int
    status: RefundStatus = RefundStatus.PROCESSING
    # Provider calls that got no definite answer, over all of the refund's attempts (the retry budget).
    provider_calls: int = 0
    # What the customer's email about the outcome needs, from the approval (``events.customer_fields``).
    to_customer: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Attempt:
    """One idempotency key of a refund, with the refund it belongs to."""

    refund: Refund
    number: int
    idempotency_key: str
    state: AttemptState
    tries: int
    server_errors: int
    key_created_at: datetime
    approved_at: datetime  # the approval's time (attempt 1's key is dated from it): the outage window opens here
    provider_refund_id: str | None = None
    # Set while an executor holds the attempt; its writes must present it.
    lease_id: uuid.UUID | None = None
    last_error: str | None = None
    traceparent: str | None = None  # the trace the attempt continues (of the approval that scheduled it)
    # The provider answered the key with this refund, and it was not ours: a refund may exist under the key.
    mismatched_refund_id: str | None = None
    disputed: bool = False  # billing reported a chargeback of the payment: no refund may be made any more
    # When the provider first answered the key "not executed, try later" (rate limited), if it did.
    not_executed_since: datetime | None = None


@dataclass(frozen=True)
class ExternalRefund:
    """A refund found at the provider that Refundflow did not make (or that we had given up on)."""

    provider_refund_id: str
    payment_id: str
    amount: int
    currency: str
    status: str
    attributed: bool


@dataclass(frozen=True)
class SubscriptionCancel:
    cancel_id: str
    payment_id: str
    merchant_id: str
    subscription_id: str
    at_period_end: bool
    refund_id: str | None
    tries: int = 0
    lease_id: uuid.UUID | None = None
    to_customer: dict[str, Any] = field(default_factory=dict, compare=False)
    after_extension: bool = False  # waits for the extension its decision (refund_id) granted


GRANT_KEY_PREFIX = "rf_ext_"


@dataclass(frozen=True)
class SubscriptionExtension:
    """A goodwill extension to execute at the provider. ``until`` (the new period end) is fixed from the provider's
    period end before the first change, so that repeating the change never moves it further."""

    extension_id: str
    payment_id: str
    merchant_id: str
    subscription_id: str
    days: int
    refund_id: str | None
    until: datetime | None = None
    tries: int = 0
    lease_id: uuid.UUID | None = None
    to_customer: dict[str, Any] = field(default_factory=dict, compare=False)
    stale_grant_keys: tuple[str, ...] = ()  # older grants' records the change removes from the subscription
    records_grant: bool = True  # False: the merchant's own metadata leaves no key for this grant's record
    from_period_end: datetime | None = None  # the provider's period end ``until`` was fixed from

    @property
    def grant_key(self) -> str:
        """The subscription's metadata key that records this grant at the provider (Stripe: at most 40 characters,
        so the event id's hex)."""
        return f"{GRANT_KEY_PREFIX}{uuid.UUID(self.extension_id).hex}"

    @property
    def idempotency_key(self) -> str:
        # One key per try: Stripe replays a stored 5xx for a key forever, and the change (an absolute ``until``)
        # is harmless to repeat, so a later try needs no reconciliation, only a new key. And one per ``until``: a
        # renewal moves it between tries that a refused key does not count, and Stripe refuses a key's other body.
        until = int(self.until.timestamp()) if self.until else 0
        return f"extend_{self.extension_id}_{self.tries}_{until}"


def idempotency_key(refund_id: str, attempt: int) -> str:
    return f"refund_{refund_id}_{attempt}"


_OUR_REFUND_ID = re.compile(r"ref_[0-9a-f]{32}")  # intake's ids: ref_ and a uuid's hex (merchant_accounts.new_id)


def names_our_refund(refund_id: str) -> bool:
    """True if a provider refund's ``metadata.refund_id`` has the shape of our refund ids."""
    return _OUR_REFUND_ID.fullmatch(refund_id) is not None
