"""Intake's use cases for payments and refund requests. Each runs in the caller's transaction: state change
and events commit together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from refundflow_intake import ledger, refund_decisions, repository
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.domain import (
    Channel,
    DuplicatePayment,
    InvalidProration,
    OpenRequestExists,
    PaymentIsDisputed,
    PaymentNotFound,
    ReasonDetailsRequired,
    RefundReason,
    RefundRequest,
    RefundStatus,
    SubscriptionAction,
    refundable_amount,
)
from refundflow_intake.merchant_accounts import new_id
from refundflow_intake.proration import period_days, prorate
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.events import PaymentDisputed, PaymentSucceeded, Product, RefundRequested, SubscriptionPeriod
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)

SOURCE = "refundflow/intake"
AUTO_APPROVER = "policy:auto_approve"

Row = dict[str, Any]


class UnknownMerchant(ValueError):
    """An event for a merchant intake does not know: it can never be handled (dead-lettered)."""


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
) -> Row:
    """A payment registered by the merchant's API call; published as ``payment.succeeded``."""
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
    if not await repository.insert_payment(conn, payment):
        raise DuplicatePayment(f"payment {provider_payment_id} is already registered")
    await ledger.credit_payment(conn, payment)
    await add_event(conn, data, source=SOURCE)
    return payment


async def consume_payment_succeeded(conn: asyncpg.Connection, data: PaymentSucceeded) -> bool:
    """A payment published by billing (or by intake itself): registered once, by its payment id."""
    if not await repository.merchant_exists(conn, data.merchant_id):
        raise UnknownMerchant(f"no merchant {data.merchant_id}")
    payment = payment_row(data)
    if not await repository.insert_payment(conn, payment):
        # Intake's own payment coming back, a redelivery, or the provider payment under another id.
        log.info("payment_already_registered", provider_payment_id=data.provider_payment_id)
        return False
    await ledger.credit_payment(conn, payment)
    return True


async def consume_payment_disputed(conn: asyncpg.Connection, data: PaymentDisputed) -> None:
    """From now on no refund may be asked for on this payment: the dispute settles the money."""
    await repository.record_dispute(
        conn,
        {
            "payment_id": data.payment_id,
            "merchant_id": data.merchant_id,
            "dispute_id": data.dispute_id,
            "reason": data.reason,
        },
    )


@dataclass(frozen=True)
class Proration:
    """A share of the payment by days: unused days of the period, or days the service was down."""

    days: int
    period_days: int | None = None


@dataclass(frozen=True)
class Quote:
    amount: int
    currency: str
    refundable_amount: int
    flags: list[str]
    approvals_required: int
    auto_approved: bool


def _requested_amount(payment: Row, amount: int | None, proration: Proration | None) -> int | None:
    if proration is None:
        return amount
    if amount is not None:
        raise InvalidProration("give either an amount or a proration, not both")
    of_days = proration.period_days
    if of_days is None:
        start, end = payment["subscription_period_start"], payment["subscription_period_end"]
        if start is None or end is None:
            raise InvalidProration("the payment has no subscription period: give proration.period_days")
        of_days = period_days(start, end)
    return prorate(payment["amount"], proration.days, of_days)


async def _evaluate(
    conn: asyncpg.Connection,
    payment: Row,
    *,
    reason: RefundReason,
    amount: int | None,
    proration: Proration | None,
    currency: str | None,
    now: datetime,
) -> tuple[Quote, RefundPolicy]:
    """The hard rules (raise) and the soft ones (flags), for a request or a quote."""
    if await repository.is_disputed(conn, payment["id"]):
        raise PaymentIsDisputed(f"payment {payment['id']} is disputed: refunds are blocked")
    held = await repository.amount_held_by_refunds(conn, payment["id"])
    rule = RefundRequest(payment_amount=payment["amount"], payment_currency=payment["currency"], held_by_refunds=held)
    decided = rule.decide_amount(_requested_amount(payment, amount, proration), currency)
    policy = await policies.effective_policy(conn, payment["merchant_id"], payment["product_id"])
    flags = policy.flags(paid_at=payment["paid_at"], now=now, category=payment["product_category"], reason=reason)
    quote = Quote(
        amount=decided,
        currency=payment["currency"],
        refundable_amount=refundable_amount(payment["amount"], held),
        flags=flags,
        approvals_required=policy.approvals_required(decided, payment["currency"]),
        auto_approved=policy.auto_approves(amount=decided, currency=payment["currency"], flags=flags, reason=reason),
    )
    return quote, policy


async def quote_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    payment_id: str,
    reason: RefundReason,
    amount: int | None,
    proration: Proration | None,
    currency: str | None,
    now: datetime,
) -> Quote:
    """What a request would come to, without creating anything."""
    payment = await repository.get_payment(conn, merchant_id, payment_id)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    quote, _ = await _evaluate(
        conn, payment, reason=reason, amount=amount, proration=proration, currency=currency, now=now
    )
    return quote


async def request_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    payment_id: str,
    reason: RefundReason,
    amount: int | None,
    currency: str | None,
    actor: str,
    now: datetime,
    reason_details: str | None = None,
    proration: Proration | None = None,
    channel: Channel = Channel.API,
) -> Row:
    """A new pending request, flagged by the soft rules; approved at once when the policy auto-approves it."""
    # The payment row lock serialises concurrent requests on one payment: two requests cannot both
    # take the same refundable amount, nor both be the customer's one open request.
    structlog.contextvars.bind_contextvars(payment_id=payment_id)
    payment = await repository.get_payment(conn, merchant_id, payment_id, lock=True)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    if reason is RefundReason.OTHER and not reason_details:
        raise ReasonDetailsRequired("reason 'other' needs reason_details saying why")
    if channel is not Channel.API and await repository.has_open_customer_request(conn, payment_id):
        raise OpenRequestExists(f"payment {payment_id} already has an open refund request")
    quote, _ = await _evaluate(
        conn, payment, reason=reason, amount=amount, proration=proration, currency=currency, now=now
    )
    refund = {
        "id": new_id("ref"),
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "amount": quote.amount,
        "requested_amount": quote.amount,
        "currency": payment["currency"],
        "reason": reason.value,
        "reason_details": reason_details,
        "status": RefundStatus.PENDING.value,
        "channel": channel.value,
        "flags": quote.flags,
    }
    structlog.contextvars.bind_contextvars(refund_id=refund["id"])
    await repository.insert_refund(conn, refund)
    why = reason.value + (f": {reason_details}" if reason_details else "")
    await repository.add_timeline_entry(conn, refund["id"], RefundStatus.PENDING, actor, why, action="requested")
    await add_event(
        conn,
        RefundRequested(
            refund_id=refund["id"],
            payment_id=payment_id,
            merchant_id=merchant_id,
            customer_email=payment["customer_email"],
            amount=refund["amount"],
            currency=refund["currency"],
            reason=reason.value,
        ),
        source=SOURCE,
    )
    if quote.auto_approved:
        # The rule authorises money back, not ending a subscription: that stays a person's decision.
        keep = SubscriptionAction.REFUND_ONLY if payment["subscription_id"] else None
        return await refund_decisions.approve_refund(
            conn,
            merchant_id,
            refund["id"],
            actor=AUTO_APPROVER,
            note="within the auto-approval rule",
            subscription_action=keep,
        )
    return refund
