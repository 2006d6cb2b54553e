"""Intake's use cases. Each runs in the caller's transaction: state change and events commit together."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from refundflow_shared.events import PaymentSucceeded, Product, RefundApproved, RefundRequested
from refundflow_shared.outbox import add_event

from refundflow_intake import repository
from refundflow_intake.domain import (
    DuplicatePayment,
    PaymentNotFound,
    RefundNotFound,
    RefundRequest,
    RefundStatus,
    check_transition,
)

SOURCE = "refundflow/intake"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def create_merchant(conn: asyncpg.Connection, name: str) -> tuple[str, str]:
    """A new merchant and its first API key; the key is returned once and stored only as a hash."""
    merchant_id = new_id("mer")
    api_key = f"rfk_{secrets.token_urlsafe(32)}"
    await repository.insert_merchant(conn, merchant_id, name)
    await repository.insert_api_key(conn, new_id("key"), merchant_id, api_key)
    return merchant_id, api_key


async def register_payment(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    customer_email: str,
    amount: int,
    currency: str,
    provider_payment_id: str,
    paid_at: datetime,
    product: Product,
) -> dict[str, Any]:
    payment = {
        "id": new_id("pay"),
        "merchant_id": merchant_id,
        "customer_email": customer_email,
        "amount": amount,
        "currency": currency,
        "provider_payment_id": provider_payment_id,
        "paid_at": paid_at,
        "product_id": product.id,
        "product_name": product.name,
        "product_kind": product.kind,
    }
    if not await repository.insert_payment(conn, payment):
        raise DuplicatePayment(f"payment {provider_payment_id} is already registered")
    await add_event(
        conn,
        PaymentSucceeded(
            payment_id=payment["id"],
            merchant_id=merchant_id,
            customer_email=customer_email,
            amount=amount,
            currency=currency,
            provider_payment_id=provider_payment_id,
            paid_at=paid_at,
            product=product,
        ),
        source=SOURCE,
    )
    return payment


async def request_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    payment_id: str,
    reason: str,
    amount: int | None,
    currency: str | None,
    actor: str,
) -> dict[str, Any]:
    # The payment row lock serialises concurrent requests on one payment: two requests cannot both
    # take the same refundable amount.
    structlog.contextvars.bind_contextvars(payment_id=payment_id)
    payment = await repository.get_payment(conn, merchant_id, payment_id, lock=True)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    rule = RefundRequest(
        payment_amount=payment["amount"],
        payment_currency=payment["currency"],
        held_by_refunds=await repository.amount_held_by_refunds(conn, payment_id),
    )
    refund = {
        "id": new_id("ref"),
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "amount": rule.decide_amount(amount, currency),
        "currency": payment["currency"],
        "reason": reason,
        "status": RefundStatus.PENDING.value,
    }
    structlog.contextvars.bind_contextvars(refund_id=refund["id"])
    await repository.insert_refund(conn, refund)
    await repository.add_timeline_entry(conn, refund["id"], RefundStatus.PENDING, actor, reason)
    await add_event(
        conn,
        RefundRequested(
            refund_id=refund["id"],
            payment_id=payment_id,
            merchant_id=merchant_id,
            customer_email=payment["customer_email"],
            amount=refund["amount"],
            currency=refund["currency"],
            reason=reason,
        ),
        source=SOURCE,
    )
    return refund


async def approve_refund(
    conn: asyncpg.Connection, merchant_id: str, refund_id: str, *, actor: str, note: str | None
) -> dict[str, Any]:
    structlog.contextvars.bind_contextvars(refund_id=refund_id)
    refund = await repository.get_refund(conn, refund_id, merchant_id=merchant_id, lock=True)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    structlog.contextvars.bind_contextvars(payment_id=refund["payment_id"])
    if not check_transition(RefundStatus(refund["status"]), RefundStatus.PROCESSING):
        return refund
    payment = await repository.get_payment(conn, merchant_id, refund["payment_id"])
    assert payment is not None, "a refund always has its payment"
    await repository.update_refund_status(conn, refund_id, RefundStatus.PROCESSING)
    await repository.add_timeline_entry(conn, refund_id, RefundStatus.PROCESSING, actor, note)
    await add_event(
        conn,
        RefundApproved(
            refund_id=refund_id,
            payment_id=payment["id"],
            merchant_id=merchant_id,
            customer_email=payment["customer_email"],
            amount=refund["amount"],
            currency=refund["currency"],
            provider_payment_id=payment["provider_payment_id"],
            payment_amount=payment["amount"],
            approved_by=actor,
        ),
        source=SOURCE,
    )
    return {**refund, "status": RefundStatus.PROCESSING.value}


async def record_refund_outcome(
    conn: asyncpg.Connection,
    refund_id: str,
    outcome: RefundStatus,
    *,
    actor: str,
    failure_reason: str | None = None,
) -> None:
    """The provider's verdict, reported by the processor: finish the refund and the payment's totals."""
    refund = await repository.get_refund(conn, refund_id, lock=True)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    if not check_transition(RefundStatus(refund["status"]), outcome):
        return
    await repository.update_refund_status(conn, refund_id, outcome, failure_reason=failure_reason)
    await repository.add_timeline_entry(conn, refund_id, outcome, actor, failure_reason)
    if outcome is RefundStatus.SUCCEEDED:
        await repository.add_to_refunded_amount(conn, refund["payment_id"], refund["amount"])
