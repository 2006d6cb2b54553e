"""Payments: every payment, newest first, with its status, what it paid for and its open refund requests."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from refundflow_intake.api.dependencies import Db
from refundflow_intake.api.errors import ApiError
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser
from refundflow_intake.dashboard.pages import render
from refundflow_intake.domain import payment_status

router = APIRouter(prefix="/dashboard", include_in_schema=False)
# How deep the list goes: every payment on the pages before is read too (its refunds counted), so page 10,000
# read 200,000 payments. An older payment is found by searching for it.
DEEPEST_PAGE = 100
Page = Annotated[int, Query(ge=1)]


def status_of(payment: dict[str, Any]) -> str:
    """paid, partially_refunded, refunded, or disputed (a dispute outranks the rest: no refund can be made)."""
    if payment["disputed"]:
        return "disputed"
    return payment_status(payment["amount"], payment["refunded_amount"])


@router.get("/payments")
async def payments(
    request: Request,
    user: CurrentUser,
    db: Db,
    page: Page = 1,
    q: Annotated[str, Query(max_length=320)] = "",
    with_requests: bool = False,
) -> HTMLResponse:
    if page > DEEPEST_PAGE:
        raise ApiError(
            422,
            "page_too_deep",
            f"The list goes {DEEPEST_PAGE} pages back: search by payment id or customer email for an older payment.",
        )
    async with db.snapshot() as conn:
        rows, has_more = await queries.payments_page(
            conn, user.merchant_id, page=page, with_requests=with_requests, search=q or None
        )
        pending = await queries.pending_count(conn, user.merchant_id)
    for row in rows:
        row["status"] = status_of(row)
    filters = {"q": q} | ({"with_requests": "true"} if with_requests else {})
    base = "/dashboard/payments?" + urlencode(filters) + "&"
    return render(
        request,
        "payments.html",
        user,
        section="payments",
        payments=rows,
        page=page,
        has_more=has_more and page < DEEPEST_PAGE,  # no link to a page that would be refused
        q=q,
        with_requests=with_requests,
        pager_base=base,
        pending_badge=pending,
    )
