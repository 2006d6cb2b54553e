"""Recording cancels and extensions, checked against the payment they name (``subscription_ownership``): one that
names another subscription, or another merchant's payment, is refused before any call; one naming a payment not
heard of yet waits for its payment.succeeded (another topic's event) up to ``PAYMENT_WAIT``, as intake's commands
wait for theirs, and is settled in the transaction that learns the payment."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_processor import payment_repository
from refundflow_processor import subscription_cancel_repository as cancels
from refundflow_processor import subscription_extension_repository as extensions
from refundflow_processor.records import PaidSubscription, SubscriptionCancel, SubscriptionExtension
from refundflow_processor.subscription_cancels import refuse_cancel
from refundflow_processor.subscription_extensions import refuse_extension
from refundflow_processor.subscription_ownership import REFUSAL_ALERT, subscription_refusal

log = structlog.get_logger(__name__)


def _refusal(paid: PaidSubscription, request: SubscriptionCancel | SubscriptionExtension) -> str | None:
    return subscription_refusal(
        paid, merchant_id=request.merchant_id, payment_id=request.payment_id, subscription_id=request.subscription_id
    )


async def record_cancel(conn: asyncpg.Connection, cancel: SubscriptionCancel) -> None:
    paid = await payment_repository.paid_subscription(conn, cancel.payment_id)
    if paid is None:
        await cancels.request_cancel(conn, cancel, state="awaiting_payment")
        log.info("subscription_cancel_awaits_its_payment")
        return
    refusal = _refusal(paid, cancel)
    await cancels.request_cancel(conn, cancel, state="scheduled" if refusal is None else "failed")
    if refusal is not None:
        await _refuse_cancel(conn, cancel, refusal)


async def record_extension(conn: asyncpg.Connection, extension: SubscriptionExtension) -> None:
    paid = await payment_repository.paid_subscription(conn, extension.payment_id)
    if paid is None:
        await extensions.request_extension(conn, extension, state="awaiting_payment")
        log.info("subscription_extension_awaits_its_payment")
        return
    refusal = _refusal(paid, extension)
    await extensions.request_extension(conn, extension, state="scheduled" if refusal is None else "failed")
    if refusal is not None:
        await _refuse_extension(conn, extension, refusal)


async def settle_awaiting(conn: asyncpg.Connection, payment_id: str, paid: PaidSubscription) -> None:
    """The payment is known now: the cancels and extensions that waited for it go, or are refused."""
    for extension in await extensions.take_awaiting_extensions(conn, payment_id):
        if (refusal := _refusal(paid, extension)) is None:
            await extensions.schedule_extension(conn, extension)
        else:
            await _refuse_extension(conn, extension, refusal)
    for cancel in await cancels.take_awaiting_cancels(conn, payment_id):
        if (refusal := _refusal(paid, cancel)) is None:
            await cancels.schedule_cancel(conn, cancel)
        else:
            await _refuse_cancel(conn, cancel, refusal)


async def _refuse_cancel(conn: asyncpg.Connection, cancel: SubscriptionCancel, refusal: str) -> None:
    log.error("subscription_cancel_refused_before_any_call", reason=refusal)
    await refuse_cancel(conn, cancel, refusal, **REFUSAL_ALERT)


async def _refuse_extension(conn: asyncpg.Connection, extension: SubscriptionExtension, refusal: str) -> None:
    log.error("subscription_extension_refused_before_any_call", reason=refusal)
    await refuse_extension(conn, extension, refusal, **REFUSAL_ALERT)
