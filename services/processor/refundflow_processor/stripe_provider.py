"""The Stripe adapter, through the official SDK (also talks to our Stripe-compatible sandbox)."""

from __future__ import annotations

from typing import Any

import stripe

from refundflow_processor.payment_provider import ProviderRefund, ProviderRefused, ProviderStatus, ProviderUnavailable

# Stripe's refund statuses, folded into ours. requires_action waits on the customer: still pending.
_STATUS: dict[str, ProviderStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "failed",
}


class StripeProvider:
    def __init__(self, api_key: str, api_base: str, timeout_seconds: float) -> None:
        # The SDK's own retries are off: ours run from a durable schedule and keep the idempotency key.
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=0,
            http_client=stripe.HTTPXClient(timeout=timeout_seconds, allow_sync_methods=True),
        )

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        params: Any = {
            "payment_intent": payment_ref,
            "amount": amount,
            "metadata": {"refund_id": refund_id},
        }
        try:
            refund = await self._client.v1.refunds.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailable(repr(exc)) from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            if status == 409 or status >= 500:
                raise ProviderUnavailable(f"{status}: {exc.user_message or exc}") from exc
            raise ProviderRefused(exc.code or "provider_refused", str(exc.user_message or exc)) from exc
        return _to_provider_refund(refund)

    async def find_refund(self, *, payment_ref: str, refund_id: str) -> ProviderRefund | None:
        try:
            page = await self._client.v1.refunds.list_async(params={"payment_intent": payment_ref, "limit": 100})
        except stripe.StripeError as exc:
            raise ProviderUnavailable(repr(exc)) from exc
        async for refund in page.auto_paging_iter():
            metadata: Any = refund.metadata or {}
            if metadata.get("refund_id") == refund_id:
                return _to_provider_refund(refund)
        return None


def _to_provider_refund(refund: stripe.Refund) -> ProviderRefund:
    return ProviderRefund(
        id=refund.id,
        status=_STATUS.get(refund.status or "", "pending"),
        amount=refund.amount,
        failure_reason=getattr(refund, "failure_reason", None),
    )
