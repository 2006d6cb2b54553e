from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from refundflow_shared.events import Product

from refundflow_intake import refund_desk, repository
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.schemas import PaymentCreate, PaymentOut, RefundSummary
from refundflow_intake.domain import PaymentNotFound, payment_status, refundable_amount

router = APIRouter(prefix="/v1/payments", tags=["payments"])


def payment_out(payment: dict[str, Any], held_by_refunds: int, refunds: list[dict[str, Any]]) -> PaymentOut:
    return PaymentOut(
        **payment,
        status=payment_status(payment["amount"], payment["refunded_amount"]),
        refundable_amount=refundable_amount(payment["amount"], held_by_refunds),
        product=Product(id=payment["product_id"], name=payment["product_name"], kind=payment["product_kind"]),
        refunds=[RefundSummary(**r) for r in refunds],
    )


@router.post("", status_code=201)
async def register_payment(body: PaymentCreate, caller: CurrentCaller, db: Db) -> PaymentOut:
    """Register a captured payment so that it can be refunded."""
    async with db.transaction() as conn:
        payment = await refund_desk.register_payment(
            conn, caller.merchant_id, **body.model_dump(exclude={"product"}), product=body.product
        )
        stored = await repository.get_payment(conn, caller.merchant_id, payment["id"])
    assert stored is not None
    return payment_out(stored, 0, [])


@router.get("/{payment_id}")
async def get_payment(payment_id: str, caller: CurrentCaller, db: Db) -> PaymentOut:
    async with db.transaction() as conn:
        payment = await repository.get_payment(conn, caller.merchant_id, payment_id)
        if payment is None:
            raise PaymentNotFound(f"no payment {payment_id}")
        held = await repository.amount_held_by_refunds(conn, payment_id)
        refunds = await repository.refunds_of_payment(conn, payment_id)
    return payment_out(payment, held, refunds)
