"""Base of the fake providers that subscription tests write: their refund calls are not what the test is about."""

from __future__ import annotations

from refundflow_processor.payment_provider import ProviderRefund, ProviderUnavailable


class NoRefundsHere:
    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        raise ProviderUnavailable("not in this test")

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        raise ProviderUnavailable("not in this test")

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return []
