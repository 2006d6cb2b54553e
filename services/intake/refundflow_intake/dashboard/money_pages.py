"""Balance: per currency, what is available, held by refunds awaiting the provider, and refunded; and what disputed
payments amount to, which the balance does not account for."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from refundflow_intake import ledger, repository
from refundflow_intake.api.dependencies import Db
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser
from refundflow_intake.dashboard.pages import render
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=RetriedRoute)


@router.get("/balance")
async def balance(request: Request, user: CurrentUser, db: Db) -> HTMLResponse:
    async with db.snapshot() as conn:
        lines = await ledger.balance(conn, user.merchant_id)
        disputes = {d["currency"]: d for d in await repository.disputed_per_currency(conn, user.merchant_id)}
        pending = await queries.pending_count(conn, user.merchant_id)
    return render(
        request, "balance.html", user, section="balance", lines=lines, disputes=disputes, pending_badge=pending
    )
