"""What the processor does with other services' events."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_processor import repository
from refundflow_processor.payment_provider import PaymentProvider, ProviderUnavailable
from refundflow_processor.refund_outcomes import SOURCE
from refundflow_shared.consumer import EventConsumer, TransientError
from refundflow_shared.events import (
    Event,
    PaymentSucceeded,
    RefundApproved,
    SubscriptionCanceled,
    SubscriptionCancelRequested,
)
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)


def register(consumer: EventConsumer, provider: PaymentProvider) -> None:
    @consumer.handles(PaymentSucceeded)
    async def payment_succeeded(conn: asyncpg.Connection, event: Event, data: PaymentSucceeded) -> None:
        await repository.remember_paid(conn, data)

    @consumer.handles(RefundApproved)
    async def refund_approved(conn: asyncpg.Connection, event: Event, data: RefundApproved) -> None:
        if await repository.accept_refund(conn, data):
            log.info("refund_scheduled")

    @consumer.handles(SubscriptionCancelRequested)
    async def cancel_subscription(conn: asyncpg.Connection, event: Event, data: SubscriptionCancelRequested) -> None:
        # Cancelling is idempotent at the provider, so a redelivery after a crash here repeats it harmlessly.
        try:
            subscription = await provider.cancel_subscription(data.subscription_id, at_period_end=data.at_period_end)
        except ProviderUnavailable as exc:
            raise TransientError(str(exc)) from exc
        await add_event(
            conn,
            SubscriptionCanceled(
                payment_id=data.payment_id,
                merchant_id=data.merchant_id,
                subscription_id=subscription.id,
                at_period_end=data.at_period_end,
                ends_at=subscription.ends_at,
                refund_id=data.refund_id,
            ),
            source=SOURCE,
        )
        log.info("subscription_canceled", subscription_id=subscription.id, at_period_end=data.at_period_end)
