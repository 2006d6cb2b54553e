"""Refund requests: quoted, asked for (once per idempotency key), approved at once when the policy says so. Each
runs in the caller's transaction: state change and events commit together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from refundflow_intake import actors, idempotency, refund_decisions, repository
from refundflow_intake.domain import (
    Channel,
    InvalidProration,
    OpenRequestExists,
    PaymentIsDisputed,
    PaymentNotFound,
    ProviderPaymentConflict,
    RefundReason,
    RefundRequest,
    RefundStatus,
    SubscriptionAction,
    provider_step,
    refundable_amount,
    stated_details,
)
from refundflow_intake.merchant_accounts import new_id
from refundflow_intake.portal.links import CustomerLinks, to_customer
from refundflow_intake.proration import period_days, prorate
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_intake.request_terms import RequestTerms
from refundflow_shared.events import RefundRequested

AUTO_APPROVER = actors.AUTO_APPROVER

Row = dict[str, Any]


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
    return prorate(payment["amount"], proration.days, of_days, step=provider_step(payment["currency"]))


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
    standing = await repository.standing(conn, payment)
    held, policy = standing.held, standing.policy
    if standing.disputed:
        raise PaymentIsDisputed(f"payment {payment['id']} is disputed: refunds are blocked")
    if payment["provider_payment_conflict"]:
        raise ProviderPaymentConflict(f"payment {payment['id']}: its provider payment is another merchant's too")
    rule = RefundRequest(payment_amount=payment["amount"], payment_currency=payment["currency"], held_by_refunds=held)
    decided = rule.decide_amount(_requested_amount(payment, amount, proration), currency)
    flags = policy.flags(paid_at=payment["paid_at"], now=now, category=payment["product_category"], reason=reason)
    quote = Quote(
        amount=decided,
        currency=payment["currency"],
        refundable_amount=refundable_amount(payment["amount"], held),
        flags=flags,
        approvals_required=policy.approvals_required(
            decided, payment["currency"], refunded=standing.refunded_by_others
        ),
        auto_approved=policy.auto_approves(
            amount=decided, refunded=held, currency=payment["currency"], flags=flags, reason=reason
        ),
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
    actor: str | None,
    now: datetime,
    links: CustomerLinks,
    reason_details: str | None = None,
    proration: Proration | None = None,
    channel: Channel = Channel.API,
    cancel_subscription: bool | None = None,
    asked_at: datetime | None = None,
) -> str:
    """A new pending request, flagged by the soft rules; approved at once when the policy auto-approves it.
    Returns its id. ``actor`` None: the payment's customer (the portal). ``cancel_subscription``: the customer's
    wish for their subscription (portal), None when not asked. ``asked_at``: when it was asked, if before ``now``
    (a command that waited): the refund window is judged then."""
    # The payment row lock serialises concurrent requests on one payment: two requests cannot both
    # take the same refundable amount, nor both be the customer's one open request.
    structlog.contextvars.bind_contextvars(payment_id=payment_id)
    payment = await repository.get_payment(conn, merchant_id, payment_id, lock=True)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    reason_details = stated_details(reason, reason_details)
    if channel is not Channel.API and await repository.has_open_customer_request(conn, payment_id):
        raise OpenRequestExists(f"payment {payment_id} already has an open refund request")
    asked_at = asked_at or now
    quote, policy = await _evaluate(
        conn, payment, reason=reason, amount=amount, proration=proration, currency=currency, now=asked_at
    )
    refund_id = new_id("ref")
    structlog.contextvars.bind_contextvars(refund_id=refund_id)
    why = reason.value + (f": {reason_details}" if reason_details else "")
    actor = actor or actors.customer(payment["customer_email"])
    requested = RefundRequested(
        refund_id=refund_id,
        payment_id=payment_id,
        merchant_id=merchant_id,
        customer_email=payment["customer_email"],
        amount=quote.amount,
        currency=payment["currency"],
        reason=reason.value,
        channel=channel.value,
        auto_approved=quote.auto_approved,
        **to_customer(links, payment),
    )
    await repository.insert_refund(
        conn,
        {
            "id": refund_id,
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
            "judged_by": RequestTerms.of(policy, asked_at=asked_at).model_dump_json(),
            "review_target_hours": policy.review_target_hours,
            "review_due_at": now + timedelta(hours=policy.review_target_hours),
            "cancel_subscription": cancel_subscription if payment["subscription_id"] else None,
        },
        repository.Audit(actor, why, action="requested"),
        events=[requested],
    )
    if quote.auto_approved:
        # The rule authorises money back, not ending a subscription: that stays a person's decision, or the
        # customer's own when they asked for it (then the default cancels it, unless it has ended already).
        cancel = cancel_subscription and channel is not Channel.API
        action = SubscriptionAction.REFUND_ONLY if payment["subscription_id"] and not cancel else None
        await refund_decisions.approve_refund(
            conn,
            merchant_id,
            refund_id,
            actor=AUTO_APPROVER,
            links=links,
            note="within the auto-approval rule",
            subscription_action=action,
        )
    return refund_id


async def request_refund_once(
    conn: asyncpg.Connection,
    merchant_id: str,
    idempotency_key: str | None,
    request: dict[str, Any],
    *,
    channel: Channel = Channel.API,
    **fields: Any,
) -> tuple[str, bool]:
    """``request_refund(**fields)`` once per idempotency key of the channel: (refund id, whether it is the first
    one's replay).

    ``request`` is what the caller sent, as JSON: the key's first use fixes it, and reusing the key for another
    request is refused.
    """
    if idempotency_key is not None:
        request_hash = idempotency.fingerprint(request)
        earlier = await idempotency.claim(conn, merchant_id, channel, idempotency_key, request_hash)
        if earlier is not None:
            return earlier, True
    refund_id = await request_refund(conn, merchant_id, channel=channel, **fields)
    if idempotency_key is not None:
        await idempotency.remember(conn, merchant_id, channel, idempotency_key, refund_id=refund_id)
    return refund_id, False
