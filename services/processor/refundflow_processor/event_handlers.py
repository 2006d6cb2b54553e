"""What the processor does with other services' events: record, in the inbox transaction; never call out."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_processor import customer_erasure, payment_repository, subscription_requests
from refundflow_processor.payment_repository import PaymentClaim
from refundflow_processor.records import PaidSubscription, Payment, SubscriptionCancel, SubscriptionExtension
from refundflow_processor.refund_acceptance import accept_approved_refund
from refundflow_shared.billing_aliases import PaidMoney, alias_money_differences
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import (
    CustomerErased,
    Event,
    PaymentDisputed,
    PaymentEventData,
    PaymentSucceeded,
    RefundApproved,
    SubscriptionCancelRequested,
    SubscriptionExtensionGranted,
    customer_fields,
)
from refundflow_shared.stripe_ids import check_refundable_at_stripe

log = structlog.get_logger(__name__)


class DuplicatePayment(ValueError):
    """Billing's payment.succeeded of a provider payment its merchant's other payment holds, saying other money:
    one of the two is wrong, and billing's id is not linked to it (dead-lettered, as intake does)."""


async def lock_the_batchs_payments(conn: asyncpg.Connection, events: list[Event]) -> dict[str, Payment]:
    """The batch's known payments, locked before its handlers run. They would lock them in the order of the events;
    the executor, writing several outcomes at once, locks them in payment order: so does this, and the two never
    wait for each other. A handler that changes one of them drops it (the next reads it again)."""
    payment_ids = {event.data.payment_id for event in events if isinstance(event.data, PaymentEventData)}
    return await payment_repository.lock_payments(conn, list(payment_ids))


async def remember_paid(conn: asyncpg.Connection, data: PaymentSucceeded, locked: dict[str, Payment]) -> None:
    """Learn the payment from billing's word (its amount and currency replace what an approval claimed), and its
    subscription, which the cancels and extensions that name the payment must name."""
    said = PaidSubscription(data.merchant_id, data.subscription.id if data.subscription else None)
    paid = await payment_repository.remember_subscription(conn, data.payment_id, said)
    await subscription_requests.settle_awaiting(conn, data.payment_id, paid)
    if data.amount == 0:  # a free trial's invoice, a 100% coupon: nothing on it can be refunded, or scanned for
        log.info("payment_of_nothing_skipped", provider_payment_id=data.provider_payment_id)
        return
    # Dead-lettered, nothing of it kept, as intake does: its every refund and sync scan would fail at Stripe.
    check_refundable_at_stripe(data.provider_payment_id)
    locked.pop(data.payment_id, None)  # it may change now: the batch's next events read it again
    payment = Payment(data.payment_id, data.merchant_id, data.provider_payment_id, data.amount, data.currency)
    if await payment_repository.remember_payment(conn, payment, trusted=True) is not PaymentClaim.CONFLICT:
        return
    # Another payment holds this provider payment (or this payment id names another one): refunds of this payment
    # will be refused, and refunds found on the provider payment stay with its first owner.
    registered = await payment_repository.merchants_payment_of(conn, payment)
    if registered is not None:
        # Billing's id for a payment registered through intake: disputes under it must still stop its refunds.
        # Linked as intake links it, only when billing says the same money.
        registered_money = PaidMoney(registered.amount, registered.currency)
        if money := alias_money_differences(registered_money, PaidMoney(data.amount, data.currency)):
            log.warning(
                "payment_repeated_with_other_details", provider_payment_id=data.provider_payment_id, differences=money
            )
            raise DuplicatePayment(
                f"payment {data.payment_id} (provider payment {data.provider_payment_id}) says another"
                f" {', '.join(money)} than payment {registered.payment_id}, registered with it"
            )
        await payment_repository.record_alias(conn, payment)
    log.error("payment_claims_a_taken_provider_payment", provider_payment_id=data.provider_payment_id)


def register(consumer: EventConsumer) -> None:
    @consumer.handles(PaymentSucceeded, prepare=lock_the_batchs_payments)
    async def payment_succeeded(
        conn: asyncpg.Connection, event: Event, data: PaymentSucceeded, locked: dict[str, Payment]
    ) -> None:
        await remember_paid(conn, data, locked)

    @consumer.handles(PaymentDisputed)
    async def payment_disputed(conn: asyncpg.Connection, event: Event, data: PaymentDisputed) -> None:
        # Read by the executor before each turn: a refund the provider does not hold yet is not made.
        await payment_repository.record_dispute(conn, data.payment_id, data.merchant_id, data.dispute_id)
        log.warning("payment_disputed", dispute_id=data.dispute_id)

    @consumer.handles(RefundApproved, prepare=lock_the_batchs_payments)
    async def refund_approved(
        conn: asyncpg.Connection, event: Event, data: RefundApproved, locked: dict[str, Payment]
    ) -> None:
        await accept_approved_refund(conn, data, locked.get(data.payment_id), approved_at=event.time)

    @consumer.handles(SubscriptionCancelRequested)
    async def cancel_subscription(conn: asyncpg.Connection, event: Event, data: SubscriptionCancelRequested) -> None:
        cancel = SubscriptionCancel(
            cancel_id=str(event.id),
            payment_id=data.payment_id,
            merchant_id=data.merchant_id,
            subscription_id=data.subscription_id,
            at_period_end=data.at_period_end,
            refund_id=data.refund_id,
            to_customer=customer_fields(data),
            after_extension=data.after_extension,
        )
        await subscription_requests.record_cancel(conn, cancel)
        log.info("subscription_cancel_requested", subscription_id=data.subscription_id)

    @consumer.handles(SubscriptionExtensionGranted)
    async def extend_subscription(conn: asyncpg.Connection, event: Event, data: SubscriptionExtensionGranted) -> None:
        extension = SubscriptionExtension(
            extension_id=str(event.id),
            payment_id=data.payment_id,
            merchant_id=data.merchant_id,
            subscription_id=data.subscription_id,
            days=data.days,
            refund_id=data.refund_id,
            to_customer=customer_fields(data),
        )
        await subscription_requests.record_extension(conn, extension)
        log.info("subscription_extension_granted", subscription_id=data.subscription_id, days=data.days)

    @consumer.handles(CustomerErased)
    async def customer_erased(conn: asyncpg.Connection, event: Event, data: CustomerErased) -> None:
        await customer_erasure.erase_payment(conn, data.merchant_id, data.payment_id)
