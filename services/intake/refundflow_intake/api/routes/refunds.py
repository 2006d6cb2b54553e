from __future__ import annotations

from fastapi import APIRouter

from refundflow_intake import refund_desk, repository
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.schemas import Decision, RefundCreate, RefundOut, TimelineEntry
from refundflow_intake.domain import RefundNotFound

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


async def _refund_out(db: Db, merchant_id: str, refund_id: str) -> RefundOut:
    async with db.transaction() as conn:
        refund = await repository.get_refund(conn, refund_id, merchant_id=merchant_id)
        if refund is None:
            raise RefundNotFound(f"no refund {refund_id}")
        timeline = await repository.refund_timeline(conn, refund_id)
    return RefundOut(**refund, timeline=[TimelineEntry(**t) for t in timeline])


@router.post("", status_code=201)
async def request_refund(body: RefundCreate, caller: CurrentCaller, db: Db) -> RefundOut:
    """Ask for a refund of a payment; it waits, pending, for the merchant's decision."""
    async with db.transaction() as conn:
        refund = await refund_desk.request_refund(
            conn,
            caller.merchant_id,
            payment_id=body.payment_id,
            reason=body.reason,
            amount=body.amount,
            currency=body.currency,
            actor=caller.actor,
        )
    return await _refund_out(db, caller.merchant_id, refund["id"])


@router.get("/{refund_id}")
async def get_refund(refund_id: str, caller: CurrentCaller, db: Db) -> RefundOut:
    """The refund with its timeline: every status change, who made it and why."""
    return await _refund_out(db, caller.merchant_id, refund_id)


@router.post("/{refund_id}/approve")
async def approve_refund(refund_id: str, caller: CurrentCaller, db: Db, body: Decision | None = None) -> RefundOut:
    """Approve a pending refund: it moves to processing and goes to the payment provider."""
    async with db.transaction() as conn:
        await refund_desk.approve_refund(
            conn, caller.merchant_id, refund_id, actor=caller.actor, note=body.note if body else None
        )
    return await _refund_out(db, caller.merchant_id, refund_id)
