"""Refunds: the review queue, pending first and oldest first; requests past their review target stand out."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from refundflow_intake.api.dependencies import Db, Now
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser
from refundflow_intake.dashboard.pages import render
from refundflow_intake.domain import RefundReason, RefundStatus
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=RetriedRoute)


@router.get("/refunds")
async def refunds(
    request: Request,
    user: CurrentUser,
    db: Db,
    now: Now,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    status: RefundStatus | None = None,
    reason: RefundReason | None = None,
) -> HTMLResponse:
    async with db.snapshot() as conn:
        rows, has_more = await queries.review_queue(
            conn,
            user.merchant_id,
            page=page,
            status=status.value if status else None,
            reason=reason.value if reason else None,
        )
        pending = await queries.pending_count(conn, user.merchant_id)
    for row in rows:
        due = row["review_due_at"]
        row["overdue"] = row["status"] == "pending" and due is not None and due <= now
    filters = {k: v.value for k, v in (("status", status), ("reason", reason)) if v}
    return render(
        request,
        "refunds.html",
        user,
        section="refunds",
        refunds=rows,
        page=page,
        has_more=has_more,
        status=status.value if status else "",
        reason=reason.value if reason else "",
        statuses=[s.value for s in RefundStatus],
        reasons=[r.value for r in RefundReason],
        pager_base="/dashboard/refunds?" + urlencode(filters) + ("&" if filters else ""),
        pending_badge=pending,
    )
