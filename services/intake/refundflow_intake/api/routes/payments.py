from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from refundflow_intake import listing_queries, refund_decisions, refund_desk, repository
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.errors import documented
from refundflow_intake.api.schemas import PaymentCreate, PaymentList, PaymentOut, RefundSummary, SubscriptionCancel
from refundflow_intake.domain import (
    DuplicatePayment,
    InvalidCursor,
    NotASubscription,
    PaymentNotFound,
    payment_status,
    refundable_amount,
)
from refundflow_shared.events import Product, SubscriptionPeriod

router = APIRouter(prefix="/v1/payments", tags=["payments"])

Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
StartingAfter = Annotated[
    str | None, Query(max_length=100, description="the last id of the previous page; the next page follows it")
]


def payment_out(
    payment: dict[str, Any], held_by_refunds: int, refunds: list[dict[str, Any]], *, disputed: bool
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
        disputed=disputed,
        refunds=[RefundSummary(**r) for r in refunds],
    )


@router.post("", status_code=201, responses=documented(DuplicatePayment))
async def register_payment(body: PaymentCreate, caller: CurrentCaller, db: Db) -> PaymentOut:
    """Register a captured payment so that it can be refunded; published as ``payment.succeeded``."""
    async with db.transaction() as conn:
        payment = await refund_desk.register_payment(
            conn,
            caller.merchant_id,
            **body.model_dump(exclude={"product", "subscription"}),
            product=body.product,
            subscription=body.subscription,
        )
        stored = await repository.get_payment(conn, caller.merchant_id, payment["id"])
    assert stored is not None
    return payment_out(stored, 0, [], disputed=False)


@router.get("", responses=documented(InvalidCursor))
async def list_payments(
    caller: CurrentCaller,
    db: Db,
    status: Literal["paid", "partially_refunded", "refunded"] | None = None,
    has_open_refund_request: bool | None = Query(default=None, description="a pending refund request waits"),
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> PaymentList:
    """Your payments, newest first."""
    async with db.transaction() as conn:
        rows, has_more = await listing_queries.list_payments(
            conn,
            caller.merchant_id,
            limit=limit,
            starting_after=starting_after,
            status=status,
            has_open_refund_request=has_open_refund_request,
        )
        disputed = {r["id"] for r in rows if await repository.is_disputed(conn, r["id"])}
    data = [payment_out(r, r.pop("held_by_refunds"), [], disputed=r["id"] in disputed) for r in rows]
    return PaymentList(data=data, has_more=has_more)


@router.get("/{payment_id}", responses=documented(PaymentNotFound))
async def get_payment(payment_id: str, caller: CurrentCaller, db: Db) -> PaymentOut:
    """The payment with its status, what is left to refund, and its refunds."""
    async with db.transaction() as conn:
        payment = await repository.get_payment(conn, caller.merchant_id, payment_id)
        if payment is None:
            raise PaymentNotFound(f"no payment {payment_id}")
        held = await repository.amount_held_by_refunds(conn, payment_id)
        refunds = await repository.refunds_of_payment(conn, payment_id)
        disputed = await repository.is_disputed(conn, payment_id)
    return payment_out(payment, held, refunds, disputed=disputed)


@router.post(
    "/{payment_id}/subscription/cancel", status_code=202, responses=documented(PaymentNotFound, NotASubscription)
)
async def cancel_subscription(
    payment_id: str, caller: CurrentCaller, db: Db, body: SubscriptionCancel | None = None
) -> PaymentOut:
    """Cancel the subscription without any refund: publishes ``subscription.cancel_requested``."""
    async with db.transaction() as conn:
        payment = await repository.get_payment(conn, caller.merchant_id, payment_id)
        if payment is None:
            raise PaymentNotFound(f"no payment {payment_id}")
        at_period_end = body.at_period_end if body else True
        await refund_decisions.cancel_subscription(
            conn, caller.merchant_id, payment, at_period_end=at_period_end, actor=caller.actor
        )
    return await get_payment(payment_id, caller, db)
