"""Bases of the fake providers that tests write: the calls a test is not about answer no answer."""

from __future__ import annotations

from datetime import datetime

from refundflow_processor.payment_provider import ProviderRefund, ProviderSubscription, ProviderUnavailable


class NoRefundsHere:
    """For subscription tests: their refund calls are not what the test is about."""

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        raise ProviderUnavailable("not in this test")

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        raise ProviderUnavailable("not in this test")

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return []


class NoSubscriptionsHere:
    """For refund tests: their subscription calls are not what the test is about."""

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderUnavailable("not in this test")

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        raise ProviderUnavailable("not in this test")

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        raise ProviderUnavailable("not in this test")
