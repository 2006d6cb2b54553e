"""Payments: every payment, newest first, with its status, what it paid for and its open refund requests; and one
payment's page, with its refunds and, for a subscription, what was asked of it and Cancel subscription (the API's
cancel, as the signed-in person)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from refundflow_intake import actors, repository, subscription_requests
from refundflow_intake.api import errors
from refundflow_intake.api.dependencies import Db, ToCustomer
from refundflow_intake.api.errors import ApiError
from refundflow_intake.api.fields import PathId
from refundflow_intake.api.views import payment_view
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.pages import render, see_other
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import DomainError, payment_status
from refundflow_intake.roles import Permission, require
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=RetriedRoute)
# How deep the list goes: every payment on the pages before is read too (its refunds counted), so page 10,000
# read 200,000 payments. An older payment is found by searching for it.
DEEPEST_PAGE = 100
Page = Annotated[int, Query(ge=1)]
_CANCEL_WHEN = {"period_end": True, "now": False}  # the form's choice: whether it cancels at the period's end


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


@router.get("/payments/{payment_id}")
async def payment_page(request: Request, payment_id: PathId, user: CurrentUser, db: Db) -> HTMLResponse:
    return await _payment_page(request, db, user, payment_id)


@router.post("/payments/{payment_id}/subscription/cancel")
async def cancel_subscription(
    request: Request,
    payment_id: PathId,
    user: FormUser,
    db: Db,
    links: ToCustomer,
    when: Annotated[str, Form(max_length=20)] = "",
    form_key: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """The same cancel as ``POST /v1/payments/{id}/subscription/cancel``. The form's single-use key asks once:
    sent again (a double click, a reload, also after the provider refused) it asks nothing."""
    try:
        require(user.role, Permission.CANCEL_SUBSCRIPTIONS)
        if when not in _CANCEL_WHEN:
            return await _payment_page(request, db, user, payment_id, error=_CHOOSE_WHEN, status_code=422)
        async with db.transaction() as conn:
            asked = await subscription_requests.cancel_subscription(
                conn,
                user.merchant_id,
                payment_id,
                at_period_end=_CANCEL_WHEN[when],
                actor=actors.person(user.user_id),
                links=links,
                form_key=form_key or None,
            )
    except DomainError as exc:
        return await _payment_page(request, db, user, payment_id, error=exc, status_code=errors.status_of(type(exc)))
    return see_other(f"/dashboard/payments/{payment_id}?done={'cancel_asked' if asked else 'cancel_not_asked'}")


_CHOOSE_WHEN = "Choose when the subscription ends: at the end of the period, or now."


async def _payment_page(
    request: Request,
    db: Db,
    user: SignedIn,
    payment_id: str,
    *,
    error: str | DomainError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    async with db.snapshot() as conn:
        payment = await payment_view(conn, user.merchant_id, payment_id)  # another merchant's: a 404
        row = await repository.get_payment(conn, user.merchant_id, payment_id)
        pending = await queries.pending_count(conn, user.merchant_id)
    assert row is not None  # read in the same snapshot as the view
    return render(
        request,
        "payment.html",
        user,
        section="payments",
        payment=payment,
        subscription_ended=row["subscription_ended"],
        form_key=secrets.token_urlsafe(18),
        error=error,
        status_code=status_code,
        pending_badge=pending,
    )
