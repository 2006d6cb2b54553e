"""What the processor needs of a payment provider. Adapters (Stripe first) implement it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

ProviderStatus = Literal["succeeded", "pending", "failed"]

# Stripe's refund failure reasons; anything else a provider says is reported as "unknown".
FAILURE_REASONS = frozenset(
    {
        "lost_or_stolen_card",
        "expired_or_canceled_card",
        "charge_for_pending_refund_disputed",
        "insufficient_funds",
        "declined",
        "merchant_request",
        "unknown",
    }
)


def normalise_failure_reason(reason: str | None) -> str:
    return reason if reason in FAILURE_REASONS else "unknown"


@dataclass(frozen=True)
class ProviderRefund:
    id: str
    status: ProviderStatus
    amount: int
    currency: str = ""
    failure_reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    payment_ref: str | None = None  # the provider payment it refunds (Stripe's payment intent), if the answer says
    charge: str | None = None  # and its charge (Stripe's ch_... or py_...), if the answer says

    @property
    def refund_id(self) -> str | None:
        """Our refund id, when Refundflow made this refund (we always send it as metadata)."""
        return self.metadata.get("refund_id")

    def of_payment(self, provider_payment_id: str) -> bool | None:
        """Whether this refunds ``provider_payment_id`` (a payment intent's id or a charge's), as far as the answer
        says; None when it names neither."""
        named = {ref for ref in (self.payment_ref, self.charge) if ref is not None}
        return provider_payment_id in named if named else None


@dataclass(frozen=True)
class ProviderSubscription:
    id: str
    status: str
    cancel_at_period_end: bool
    ends_at: datetime | None
    # When the customer is billed next (Stripe: the period's end, or the trial's end while trialing).
    current_period_end: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)


# The last second a datetime holds (the end of the year 9999): a later Unix time is a number, but no date.
LATEST_TIMESTAMP = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
# A subscription in one of these has ended: it bills nothing more and has no period to extend (Stripe:
# ``incomplete_expired``, its first payment never came).
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})


class ProviderRefused(Exception):
    """A definite no (4xx such as a card or request error): no refund exists, retrying will not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderAuthFailed(Exception):
    """The provider refused our credentials (401, 403, a revoked or invalid key): a configuration fault.

    Nothing about any refund is known from it; calls pause until the key works again, and no refund fails.
    """


class ProviderUnavailable(Exception):
    """No definite answer: the refund may or may not exist.

    ``server_error`` marks the provider's own 5xx (not an intermediary's page): its request under the key has
    finished, and the provider replays the stored 5xx forever, so only reconciliation (or a new key, once we know
    no refund exists) gets past it.
    """

    def __init__(self, message: str, *, server_error: bool = False) -> None:
        super().__init__(message)
        self.server_error = server_error


class ProviderNotExecuted(ProviderUnavailable):
    """The provider did not execute the request and asks for it again later (Stripe: 429 ``rate_limit`` or
    ``lock_timeout``, 409 ``idempotency_key_in_use``): nothing happened under the key, so it is no failed call.
    ``retry_after``: the seconds it asked us to wait (``Retry-After``), if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PaymentProvider(Protocol):
    name: str

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        """Refund ``amount`` of a payment; the same idempotency key never refunds twice."""
        ...

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        """The refund as the provider holds it now."""
        ...

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        """Every refund the provider holds for the payment, whoever made it, newest first (as Stripe lists them)."""
        ...

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        """Cancel now or at the period's end; repeating it is harmless."""
        ...

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        """The subscription as the provider holds it now."""
        ...

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        """Move the period's end (the next bill) to ``until``, charging nothing for the days added, and set
        ``metadata`` on the subscription in the same change (merged into its own; an empty value removes a key);
        repeating it with the same ``until`` is harmless."""
        ...


async def find_refund(provider: PaymentProvider, payment_ref: str, refund_id: str) -> ProviderRefund | None:
    """The provider's refund made for our ``refund_id`` (matched by metadata), if one exists."""
    return next((r for r in await provider.list_refunds(payment_ref) if r.refund_id == refund_id), None)
