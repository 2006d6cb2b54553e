"""Every call to the payment provider counted and timed, whichever adapter makes it and whoever asks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from refundflow_processor.payment_provider import (
    PaymentProvider,
    ProviderAuthFailed,
    ProviderNotExecuted,
    ProviderRefund,
    ProviderRefused,
    ProviderSubscription,
    ProviderUnavailable,
)
from refundflow_shared.metrics import PROVIDER_CALL_SECONDS, PROVIDER_CALLS


class MeteredProvider:
    """A ``PaymentProvider`` that counts each call by operation and outcome, and times it."""

    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider
        self.name = provider.name

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        async with _metered("create_refund"):
            return await self._provider.create_refund(
                payment_ref=payment_ref,
                amount=amount,
                currency=currency,
                idempotency_key=idempotency_key,
                refund_id=refund_id,
            )

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        async with _metered("get_refund"):
            return await self._provider.get_refund(provider_refund_id)

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        async with _metered("list_refunds"):
            return await self._provider.list_refunds(payment_ref)

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        async with _metered("cancel_subscription"):
            return await self._provider.cancel_subscription(subscription_id, at_period_end=at_period_end)

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        async with _metered("get_subscription"):
            return await self._provider.get_subscription(subscription_id)

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        async with _metered("extend_subscription"):
            return await self._provider.extend_subscription(
                subscription_id, until=until, idempotency_key=idempotency_key, metadata=metadata
            )


@asynccontextmanager
async def _metered(operation: str) -> AsyncIterator[None]:
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ProviderRefused:
        outcome = "refused"
        raise
    except ProviderAuthFailed:
        outcome = "auth_failed"
        raise
    except ProviderNotExecuted:
        outcome = "not_executed"
        raise
    except ProviderUnavailable:
        outcome = "unavailable"
        raise
    except asyncio.CancelledError:  # the caller's deadline (or shutdown) ended the call
        outcome = "cancelled"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        PROVIDER_CALLS.labels(operation, outcome).inc()
        PROVIDER_CALL_SECONDS.labels(operation).observe(time.perf_counter() - started)
