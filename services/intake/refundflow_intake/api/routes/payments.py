from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from refundflow_intake import listing_queries, payments, repository, subscription_requests
from refundflow_intake.api.dependencies import CurrentCaller, Db, ToCustomer, require_admin
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import MAX_ID, ONE_LINE, PathId
from refundflow_intake.api.schemas import PaymentCreate, PaymentList, PaymentOut, SubscriptionCancel
from refundflow_intake.api.views import payment_out, payment_view
from refundflow_intake.domain import (
    DuplicatePayment,
    InvalidCursor,
    MerchantNotFound,
    NotASubscription,
    PaymentNotFound,
    PaymentStatus,
    PlatformOnly,
    ProviderPaymentTaken,
    UnsupportedProviderPayment,
)
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.events import Product, SubscriptionPeriod

router = APIRouter(prefix="/v1/payments", tags=["payments"], route_class=RetriedRoute)

Limit = Annotated[int, Query(ge=1, le=100, description="page size")]
StartingAfter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_ID,
        pattern=ONE_LINE,
        description="the last id of the previous page; the next page follows it",
    ),
]
_AGAIN: dict[int | str, dict[str, Any]] = {
    200: {"model": PaymentOut, "description": "the same payment registered again: the payment as first registered"}
}


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses=documented(
        PlatformOnly, MerchantNotFound, ProviderPaymentTaken, DuplicatePayment, UnsupportedProviderPayment
    )
    | _AGAIN,
)
async def register_payment(body: PaymentCreate, db: Db, response: Response) -> PaymentOut:
    """Register a captured payment for one of the platform's merchants (platform admin token), so that it can
    be refunded; published as ``payment.succeeded``. A provider payment belongs to one merchant: registering it
    again answers the payment already registered (200); another merchant's is refused."""
    async with db.connection(changes=True) as conn:  # the registration is one statement
        payment, created = await payments.register_payment(
            conn,
            body.merchant_id,
            **body.model_dump(exclude={"merchant_id", "product", "subscription"}),
            product=Product(**body.product.model_dump()),
            subscription=SubscriptionPeriod(**body.subscription.model_dump()) if body.subscription else None,
        )
        response.status_code = 201 if created else 200
        if created:  # nothing refunded or held yet; a dispute may be, recorded first under the provider's id
            response.headers["Location"] = f"/v1/payments/{payment['id']}"
            return payment_out(payment, 0, [], disputed=await repository.is_disputed(conn, payment["id"]))
        return await payment_view(conn, body.merchant_id, payment["id"])


@router.get("", responses=documented(InvalidCursor))
async def list_payments(
    caller: CurrentCaller,
    db: Db,
    status: PaymentStatus | None = None,
    has_open_refund_request: bool | None = Query(default=None, description="a pending refund request waits"),
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> PaymentList:
    """Your payments, newest first."""
    async with db.snapshot() as conn:
        rows, has_more = await listing_queries.list_payments(
            conn,
            caller.merchant_id,
            limit=limit,
            starting_after=starting_after,
            status=status,
            has_open_refund_request=has_open_refund_request,
        )
    data = [payment_out(r, r.pop("held_by_refunds"), [], disputed=r.pop("disputed")) for r in rows]
    return PaymentList(data=data, has_more=has_more)


@router.get("/{payment_id}", responses=documented(PaymentNotFound))
async def get_payment(payment_id: PathId, caller: CurrentCaller, db: Db) -> PaymentOut:
    """The payment with its status, what is left to refund, and its refunds."""
    async with db.snapshot() as conn:
        return await payment_view(conn, caller.merchant_id, payment_id)


@router.post(
    "/{payment_id}/subscription/cancel", status_code=202, responses=documented(PaymentNotFound, NotASubscription)
)
async def cancel_subscription(
    payment_id: PathId, caller: CurrentCaller, db: Db, links: ToCustomer, body: SubscriptionCancel | None = None
) -> PaymentOut:
    """Cancel the subscription without any refund: publishes ``subscription.cancel_requested``; the customer is
    told once the provider has cancelled it. Asking again (the same way, or less) answers 202 and publishes
    nothing, nor does a cancel of a subscription that has ended; a cancel the provider refused is asked again."""
    async with db.transaction() as conn:
        await subscription_requests.cancel_subscription(
            conn,
            caller.merchant_id,
            payment_id,
            at_period_end=body.at_period_end if body else True,
            actor=caller.actor,
            links=links,
        )
        return await payment_view(conn, caller.merchant_id, payment_id)
