"""Payments: registered by the platform (``POST /v1/payments``, or billing's ``payment.succeeded``), once each, and
disputes. A provider payment belongs to one merchant: nobody else can register it, or be refunded through it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

import asyncpg
import structlog

from refundflow_intake import repository
from refundflow_intake.domain import (
    DuplicatePayment,
    MerchantNotFound,
    ProviderPaymentTaken,
    check_provider_payment_id,
)
from refundflow_intake.merchant_accounts import merchant_exists, new_id
from refundflow_intake.repository import PaymentIdentity, payment_differences, payment_identity
from refundflow_shared.billing_aliases import PaidMoney, alias_money_differences
from refundflow_shared.events import Event, PaymentDisputed, PaymentSucceeded, Product, SubscriptionPeriod

log = structlog.get_logger(__name__)

Row = dict[str, Any]


class UnknownMerchant(ValueError):
    """An event for a merchant intake does not know: it can never be handled (dead-lettered)."""


class ForeignPayment(ValueError):
    """An event claiming a payment, or a provider payment, that belongs to another merchant (dead-lettered)."""


def payment_row(data: PaymentSucceeded) -> Row:
    subscription = data.subscription
    return {
        "id": data.payment_id,
        "merchant_id": data.merchant_id,
        "customer_email": data.customer_email,
        "customer_name": data.customer_name,
        "amount": data.amount,
        "currency": data.currency,
        "provider_payment_id": data.provider_payment_id,
        "paid_at": data.paid_at,
        "product_id": data.product.id,
        "product_name": data.product.name,
        "product_kind": data.product.kind,
        "product_category": data.product.category,
        "subscription_id": subscription.id if subscription else None,
        "subscription_period_start": subscription.current_period_start if subscription else None,
        "subscription_period_end": subscription.current_period_end if subscription else None,
    }


async def register_payment(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    customer_email: str,
    customer_name: str | None,
    amount: int,
    currency: str,
    provider_payment_id: str,
    paid_at: datetime,
    product: Product,
    subscription: SubscriptionPeriod | None,
) -> tuple[Row, bool]:
    """The platform registers a captured payment, published as ``payment.succeeded``: (the payment, created).

    The same registration again answers the payment already registered (created False); another merchant's
    provider payment, or this one's with other details, is refused. The payment, its credit and its event are
    written by one statement, so the caller needs no transaction: keep it one. A provider payment id the provider
    cannot refund is refused (``UnsupportedProviderPayment``).
    """
    check_provider_payment_id(provider_payment_id)
    data = PaymentSucceeded(
        payment_id=new_id("pay"),
        merchant_id=merchant_id,
        customer_email=customer_email,
        customer_name=customer_name,
        amount=amount,
        currency=currency,
        provider_payment_id=provider_payment_id,
        paid_at=paid_at,
        product=product,
        subscription=subscription,
    )
    payment = payment_row(data)
    try:
        stored = await repository.insert_payment(conn, payment, events=[data])
    except asyncpg.ForeignKeyViolationError as exc:  # the foreign key says so, in the insert's own round trip
        if exc.constraint_name != "payments_merchant_id_fkey":
            raise
        raise MerchantNotFound(f"no merchant {merchant_id}") from exc
    if stored:
        return stored, True
    owner = await repository.payment_of_provider(conn, provider_payment_id)
    assert owner is not None, "the insert conflicted on the provider payment, which is registered"
    if owner["merchant_id"] != merchant_id:
        raise ProviderPaymentTaken(f"provider payment {provider_payment_id} is registered to another merchant")
    if differences := payment_differences(payment_identity(owner), payment_identity(payment)):
        raise DuplicatePayment(
            f"provider payment {provider_payment_id} is already registered with another {', '.join(differences)}"
        )
    return owner, False


async def registered_among(conn: asyncpg.Connection, events: list[Event]) -> Mapping[str, PaymentIdentity]:
    """The identities of the batch's payments already registered, read at once: most are intake's own payments
    coming back (each registration is), which are then handled without another query."""
    payment_ids = [event.data.payment_id for event in events if isinstance(event.data, PaymentSucceeded)]
    return await repository.payment_identities(conn, payment_ids)


async def consume_payment_succeeded(
    conn: asyncpg.Connection, data: PaymentSucceeded, registered: Mapping[str, PaymentIdentity]
) -> bool:
    """A payment published by billing (or by intake itself): registered once, by its payment id. ``registered``:
    ``registered_among`` the batch, before it was handled. True when commands naming its payment id may go now
    (registered, or billing's id for a payment registered under ours)."""
    if data.amount == 0:  # a free trial's invoice, a 100% coupon: nothing on it can be refunded (the API refuses it)
        log.info("payment_of_nothing_skipped", provider_payment_id=data.provider_payment_id)
        return False
    check_provider_payment_id(data.provider_payment_id)  # dead-lettered, as the API answers it 422
    payment = payment_row(data)
    said = payment_identity(payment)
    if (known := registered.get(data.payment_id)) == said:
        return False  # intake's own payment coming back, or a redelivery: nothing to do
    if known is not None and known.merchant_id == data.merchant_id:
        if differences := payment_differences(known, said):
            _repeated_with_other_details(data, differences)
        return False  # a replay of an erased payment's registration: its customer stays erased
    if not await merchant_exists(conn, data.merchant_id):
        raise UnknownMerchant(f"no merchant {data.merchant_id}")
    if await repository.insert_payment(conn, payment):
        return True
    owner = await repository.payment_of_provider(conn, data.provider_payment_id)
    if owner is not None and owner["merchant_id"] != data.merchant_id:
        raise ForeignPayment(
            f"payment {data.payment_id}: provider payment {data.provider_payment_id} is registered to another merchant"
        )
    same_id = await repository.get_payment(conn, data.merchant_id, data.payment_id)
    if owner is None and same_id is None:
        raise ForeignPayment(f"payment {data.payment_id} is registered to another merchant")
    if same_id is not None and (differences := payment_differences(payment_identity(same_id), said)):
        _repeated_with_other_details(data, differences)  # registered earlier in this batch
    if owner is not None and owner["id"] != data.payment_id:
        # The merchant's provider payment, registered under another id (through the API): billing's disputes will
        # name it by billing's id, which must find it. Only if billing says the same money.
        registered_money = PaidMoney(owner["amount"], owner["currency"])
        if money := alias_money_differences(registered_money, PaidMoney(data.amount, data.currency)):
            _repeated_with_other_details(data, money)
        await repository.record_payment_alias(conn, data.payment_id, data.merchant_id, data.provider_payment_id)
        log.info("payment_already_registered", provider_payment_id=data.provider_payment_id)
        return True  # commands naming billing's id may go now
    # Intake's own payment coming back, or a redelivery.
    log.info("payment_already_registered", provider_payment_id=data.provider_payment_id)
    return False


def _repeated_with_other_details(data: PaymentSucceeded, differences: list[str]) -> NoReturn:
    """Billing's payment.succeeded again saying anything else than the payment registered, or of a provider payment
    registered through the API saying other money: one of the two is wrong, and the first one stays (dead-lettered,
    as the API answers 409)."""
    log.warning(
        "payment_repeated_with_other_details", provider_payment_id=data.provider_payment_id, differences=differences
    )
    raise DuplicatePayment(
        f"payment {data.payment_id} (provider payment {data.provider_payment_id}) says another"
        f" {', '.join(differences)} than the one registered"
    )


async def consume_payment_disputed(conn: asyncpg.Connection, data: PaymentDisputed) -> None:
    """From now on no refund may be made on this payment: the dispute settles the money. Recorded even before the
    payment (billing's payment.succeeded comes on another topic), under the id it names (ours, the provider's or
    billing's own: ``repository.disputed_sql`` matches each); it counts only for the merchant it names."""
    await repository.record_dispute(
        conn,
        {
            "payment_id": data.payment_id,
            "merchant_id": data.merchant_id,
            "dispute_id": data.dispute_id,
            "reason": data.reason,
        },
    )
