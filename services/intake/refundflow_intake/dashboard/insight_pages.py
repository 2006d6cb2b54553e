"""Insights: refund rate and amounts by reason and by product, and week by week, as charts with their numbers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from refundflow_intake import insights
from refundflow_intake.api.dependencies import Db, Now
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser
from refundflow_intake.dashboard.charts import Point, bars, columns
from refundflow_intake.dashboard.pages import render
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.money import Currency, format_amount

router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=RetriedRoute)
PERIODS = {"30": 30, "90": 90, "180": 180, "365": 365}


def _rate(refunded: int, paid: int) -> float:
    return 100 * refunded / paid if paid else 0.0


@router.get("/insights")
async def insights_page(
    request: Request,
    user: CurrentUser,
    db: Db,
    now: Now,
    days: Annotated[str, Query(pattern="^(30|90|180|365)$")] = "90",
    currency: Currency | None = None,
) -> HTMLResponse:
    start = now - timedelta(days=PERIODS[days])
    insights.check_period(start, now)  # the periods offered are all within it
    async with db.snapshot() as conn:
        found = await insights.refund_insights(conn, user.merchant_id, start, now, now)
        known = await queries.currencies(conn, user.merchant_id)
        shown = currency if currency in known else (known[0] if known else "EUR")
        weeks = await queries.weekly_series(conn, user.merchant_id, shown, start, now)
        pending = await queries.pending_count(conn, user.merchant_id)
    weekly = [Point(w["week"].strftime("%d %b"), w["refunded"], format_amount(w["refunded"], shown)) for w in weeks]
    rates = [
        Point(w["week"].strftime("%d %b"), rate, f"{rate:.1f} %")
        for w in weeks
        for rate in [_rate(w["paid_refunded"], w["paid"])]
    ]
    reasons = [r for r in found["by_reason"] if r["currency"].strip() == shown]
    by_reason = [Point(r["reason"].replace("_", " "), r["amount"], format_amount(r["amount"], shown)) for r in reasons]
    products = [p for p in found["by_product"] if p["currency"].strip() == shown]
    by_product = [Point(p["product_name"], 100 * p["refund_rate"], f"{100 * p['refund_rate']:.1f} %") for p in products]
    return render(
        request,
        "insights.html",
        user,
        section="insights",
        days=days,
        periods=list(PERIODS),
        currency=shown,
        currencies=known,
        found=found,
        reasons=reasons,
        products=products,
        weekly_chart=columns(f"Refunded per week, {shown}", weekly, width=560),
        rate_chart=columns("Refund rate per week", rates, width=560),
        reason_chart=bars(f"Refund requests by reason, {shown}", by_reason, width=520),
        product_chart=bars("Refund rate by product", by_product, width=520),
        weekly=weekly,
        rates=rates,
        pending_badge=pending,
    )
