from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from refundflow_intake import insights
from refundflow_intake.api.dependencies import CurrentCaller, Db, Now
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import Timestamp
from refundflow_intake.api.insight_schemas import RefundInsights
from refundflow_intake.domain import InvalidPeriod
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/insights", tags=["insights"], route_class=RetriedRoute)


@router.get("/refunds", responses=documented(InvalidPeriod))
async def refund_insights(
    caller: CurrentCaller,
    db: Db,
    now: Now,
    start: Annotated[Timestamp | None, Query(alias="from", description="default: 30 days ago")] = None,
    end: Annotated[
        Timestamp | None, Query(alias="to", description="default: now; after from, by 366 days at most")
    ] = None,
) -> RefundInsights:
    """Counts and amounts by reason and product, refund rate per product, time to decision, and the backlog."""
    end = end or now
    try:
        start = start or end - timedelta(days=30)
    except OverflowError:  # 30 days before ``to`` is before year 1
        raise InvalidPeriod("to is too early: from would be before year 1") from None
    insights.check_period(start, end)
    async with db.snapshot() as conn:
        found = await insights.refund_insights(conn, caller.merchant_id, start, end, now)
    return RefundInsights.model_validate({"from": start, "to": end, **found})
