"""What the processor needs of a payment provider. Adapters (Stripe first) implement it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ProviderStatus = Literal["succeeded", "pending", "failed"]


@dataclass(frozen=True)
class ProviderRefund:
    id: str
    status: ProviderStatus
    amount: int
    failure_reason: str | None = None


class ProviderRefused(Exception):
    """A definite no (4xx such as a card or request error): no refund exists, retrying will not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderUnavailable(Exception):
    """No definite answer (network error, timeout, 409, 429, 5xx): the refund may or may not exist."""


class PaymentProvider(Protocol):
    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        """Refund ``amount`` of a payment; the same idempotency key never refunds twice."""
        ...

    async def find_refund(self, *, payment_ref: str, refund_id: str) -> ProviderRefund | None:
        """The provider's refund made for ``refund_id`` (by metadata), if one exists."""
        ...
