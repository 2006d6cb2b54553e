from __future__ import annotations

from fastapi import APIRouter

from refundflow_intake import ledger
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.errors import documented
from refundflow_intake.api.schemas import Balance, BalanceLine
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/balance", tags=["balance"], route_class=RetriedRoute)


@router.get("", responses=documented())
async def get_balance(caller: CurrentCaller, db: Db) -> Balance:
    """Per currency: payments received, refunds that reached customers, refunds held while the provider
    answers (approved, or pending outside Refundflow), and what is available."""
    async with db.connection() as conn:
        lines = await ledger.balance(conn, caller.merchant_id)
    return Balance(data=[BalanceLine(**line) for line in lines])
