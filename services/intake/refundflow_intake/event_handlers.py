"""What intake does with other services' events and commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import asyncpg
import structlog

from refundflow_intake.awaited_events import AwaitingEvents, payment_registered, refund_outcome
from refundflow_intake.external_refunds import record_external_refund
from refundflow_intake.payments import consume_payment_disputed, consume_payment_succeeded, registered_among
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.refund_commands import refusal_codes, submit_refund
from refundflow_intake.refund_outcomes import record_refund_outcome, record_reversal
from refundflow_intake.repository import PaymentIdentity
from refundflow_intake.subscription_outcomes import (
    record_cancel_failed,
    record_canceled,
    record_extended,
    record_extension_failed,
)
from refundflow_intake.webhook_endpoints import record_disabled
from refundflow_shared.events import (
    Event,
    PaymentDisputed,
    PaymentSucceeded,
    RefundExternalDetected,
    RefundFailed,
    RefundReversed,
    RefundSubmit,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
    SubscriptionExtensionFailed,
    WebhookEndpointDisabled,
    topic_for,
)
from refundflow_shared.service_runtime import ServiceRuntime

log = structlog.get_logger(__name__)


def register(
    runtime: ServiceRuntime, clock: Callable[[], datetime], links: CustomerLinks, awaiting: AwaitingEvents
) -> None:
    """Register intake's handlers; the events that may wait for another topic's go through ``awaiting``."""
    consumer = runtime.consumer

    @consumer.handles(PaymentSucceeded, prepare=registered_among)
    async def payment_succeeded(
        conn: asyncpg.Connection, event: Event, data: PaymentSucceeded, registered: Mapping[str, PaymentIdentity]
    ) -> None:
        if await consume_payment_succeeded(conn, data, registered):
            await awaiting.resume(conn, payment_registered(data.merchant_id, data.payment_id))

    @consumer.handles(PaymentDisputed)
    async def payment_disputed(conn: asyncpg.Connection, event: Event, data: PaymentDisputed) -> None:
        await consume_payment_disputed(conn, data)

    @consumer.handles(RefundSucceeded)
    async def refund_succeeded(conn: asyncpg.Connection, event: Event, data: RefundSucceeded) -> None:
        await record_refund_outcome(conn, data, actor=event.source)
        await awaiting.resume(conn, refund_outcome(data.refund_id))

    @consumer.handles(RefundFailed)
    async def refund_failed(conn: asyncpg.Connection, event: Event, data: RefundFailed) -> None:
        await record_refund_outcome(conn, data, actor=event.source)
        await awaiting.resume(conn, refund_outcome(data.refund_id))  # a reversal read first changes nothing then

    async def apply_reversal(conn: asyncpg.Connection, event: Event, waited: bool) -> None:
        assert isinstance(event.data, RefundReversed)
        await record_reversal(conn, event.data, actor=event.source)

    async def apply_external_refund(conn: asyncpg.Connection, event: Event, waited: bool) -> None:
        assert isinstance(event.data, RefundExternalDetected)
        await record_external_refund(conn, event.data)

    async def apply_submit(conn: asyncpg.Connection, event: Event, waited: bool) -> None:
        assert isinstance(event.data, RefundSubmit)
        rejected = await submit_refund(
            conn, event, event.data, now=clock(), awaited_wait=awaiting.wait, waited=waited, links=links
        )
        if rejected is None:
            return
        # The refusal is answered (refund.submit_rejected, in this transaction) and parked with its reason.
        # Should this transaction not commit, the redelivery (or the next check of what waited) parks it again: the
        # DLQ is at-least-once too. Logged with its code and the bound ids, not its message: that may quote what the
        # sender wrote.
        log.warning("refund_submit_refused", code=rejected.code, source=event.source)
        await consumer.dead_letter(
            topic_for(RefundSubmit.event_type, runtime.settings.topic_prefix),
            event.partition_key.encode(),
            event.kafka_value(),
            event.kafka_headers(),
            rejected.code,
            rejected.message,
        )

    awaiting.applies(RefundReversed.event_type, apply_reversal)
    awaiting.applies(RefundExternalDetected.event_type, apply_external_refund)
    awaiting.applies(RefundSubmit.event_type, apply_submit)
    consumer.may_refuse(RefundSubmit, refusal_codes())

    @consumer.handles(RefundReversed)
    async def refund_reversed(conn: asyncpg.Connection, event: Event, data: RefundReversed) -> None:
        await awaiting.handle(conn, event)

    @consumer.handles(RefundExternalDetected)
    async def external_refund_detected(conn: asyncpg.Connection, event: Event, data: RefundExternalDetected) -> None:
        await awaiting.handle(conn, event)

    @consumer.handles(RefundSubmit)
    async def refund_submit(conn: asyncpg.Connection, event: Event, data: RefundSubmit) -> None:
        await awaiting.handle(conn, event)

    @consumer.handles(SubscriptionCanceled)
    async def subscription_canceled(conn: asyncpg.Connection, event: Event, data: SubscriptionCanceled) -> None:
        await record_canceled(conn, data, actor=event.source)

    @consumer.handles(SubscriptionCancelFailed)
    async def subscription_cancel_failed(
        conn: asyncpg.Connection, event: Event, data: SubscriptionCancelFailed
    ) -> None:
        await record_cancel_failed(conn, data, actor=event.source)

    @consumer.handles(SubscriptionExtended)
    async def subscription_extended(conn: asyncpg.Connection, event: Event, data: SubscriptionExtended) -> None:
        await record_extended(conn, data, actor=event.source)

    @consumer.handles(SubscriptionExtensionFailed)
    async def subscription_extension_failed(
        conn: asyncpg.Connection, event: Event, data: SubscriptionExtensionFailed
    ) -> None:
        await record_extension_failed(conn, data, actor=event.source)

    @consumer.handles(WebhookEndpointDisabled)
    async def webhook_endpoint_disabled(conn: asyncpg.Connection, event: Event, data: WebhookEndpointDisabled) -> None:
        await record_disabled(conn, data)
