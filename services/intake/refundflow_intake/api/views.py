"""Reads that answer the API: a payment or a refund as the merchant sees it, in the caller's transaction (a route
that just changed one answers from the same transaction, without a second round trip)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from refundflow_intake import repository
from refundflow_intake.api.schemas import (
    ExternalRefund,
    PaymentOut,
    RefundOut,
    RefundSummary,
    SubscriptionState,
    TimelineEntry,
)
from refundflow_intake.domain import PaymentNotFound, RefundNotFound, payment_status, refundable_amount
from refundflow_shared.events import Product, SubscriptionPeriod


def payment_out(
    payment: dict[str, Any],
    held_by_refunds: int,
    refunds: list[dict[str, Any]],
    *,
    disputed: bool,
    external_refunds: Sequence[dict[str, Any]] = (),
) -> PaymentOut:
    subscription = (
        SubscriptionPeriod(
            id=payment["subscription_id"],
            current_period_start=payment["subscription_period_start"],
            current_period_end=payment["subscription_period_end"],
        )
        if payment["subscription_id"]
        else None
    )
    state = (
        SubscriptionState(
            cancel_requested_at=payment["subscription_cancel_requested_at"],
            cancel_at_period_end_requested_at=payment["subscription_cancel_at_period_end_requested_at"],
            cancel_failed_at=payment["subscription_cancel_failed_at"],
            cancel_failure=payment["subscription_cancel_failure"],
            canceled_at=payment["subscription_canceled_at"],
            access_until=payment["subscription_access_until"],
            extended_to=payment["subscription_period_extended_to"],
            extension_pending_days=payment["subscription_extension_pending_days"],
            extension_failed_at=payment["subscription_extension_failed_at"],
            extension_failure=payment["subscription_extension_failure"],
        )
        if payment["subscription_id"]
        else None
    )
    return PaymentOut(
        **payment,
        status=payment_status(payment["amount"], payment["refunded_amount"]),
        refundable_amount=refundable_amount(payment["amount"], held_by_refunds),
        product=Product(
            id=payment["product_id"],
            name=payment["product_name"],
            kind=payment["product_kind"],
            category=payment["product_category"],
        ),
        subscription=subscription,
        subscription_state=state,
        disputed=disputed,
        refunds=[RefundSummary(**r) for r in refunds],
        external_refunds=[ExternalRefund(**r) for r in external_refunds],
    )


async def payment_view(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> PaymentOut:
    """The payment with its status, what is left to refund, its refunds and those made outside Refundflow."""
    payment = await repository.get_payment(conn, merchant_id, payment_id)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    held, disputed = await repository.held_and_disputed(conn, payment_id)
    refunds = await repository.refunds_of_payment(conn, payment_id)
    external = await repository.external_refunds_of_payment(conn, payment_id)
    return payment_out(payment, held, refunds, disputed=disputed, external_refunds=external)


async def refund_view(conn: asyncpg.Connection, merchant_id: str, refund_id: str) -> RefundOut:
    """The refund with who approved it so far and its audit timeline."""
    refund = await repository.refund_with_history(conn, refund_id, merchant_id)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    timeline, approvers = [TimelineEntry(**t) for t in refund.pop("timeline")], refund.pop("approvers")
    return RefundOut(**refund, approvals=approvers, timeline=timeline)
