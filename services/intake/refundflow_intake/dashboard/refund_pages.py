"""One refund request: what was asked and why, its flags in the policy's words, the timeline, and the decision
(approve, with the proration calculator and the subscription choices, or reject with a note). Decisions call
the same use cases as the API (``refund_decisions``), as the signed-in person."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from refundflow_intake import actors, refund_decisions, repository
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Db, Now, ToCustomer
from refundflow_intake.api.errors import ApiError, status_of
from refundflow_intake.api.fields import PathId
from refundflow_intake.api.views import payment_view, refund_view
from refundflow_intake.dashboard import queries
from refundflow_intake.dashboard.auth import CurrentUser, FormUser
from refundflow_intake.dashboard.money_text import parse_amount
from refundflow_intake.dashboard.pages import STATUS_LABELS, render, render_fragment, see_other
from refundflow_intake.dashboard.policy_words import two_people_because
from refundflow_intake.dashboard.refund_words import (
    action_words,
    actor_words,
    flag_explanations,
    subscription_choice,
)
from refundflow_intake.dashboard.typed_text import TypedText, as_typed, too_long
from refundflow_intake.dashboard_sessions import SignedIn
from refundflow_intake.domain import (
    CUSTOMER_CHANNELS,
    AmountNotRepresentable,
    ApprovalExceedsRequest,
    DomainError,
    ExtensionConflictsWithCancel,
    InvalidAmount,
    InvalidProration,
    InvalidSubscriptionAction,
    InvalidTransition,
    RefundExceedsRefundable,
    RefundStatus,
    SubscriptionAction,
    provider_step,
)
from refundflow_intake.proration import period_days, prorate
from refundflow_intake.request_terms import RequestTerms
from refundflow_intake.roles import Permission, require
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.money import format_amount

router = APIRouter(prefix="/dashboard/refunds", include_in_schema=False, route_class=RetriedRoute)
_FINAL = {"succeeded", "failed", "rejected", "reversed"}
# The approve form's field a refusal is about, by its code: said there, and the focus put there.
_FIELD_REFUSED = {
    InvalidAmount.code: "amount",
    AmountNotRepresentable.code: "amount",
    ApprovalExceedsRequest.code: "amount",
    RefundExceedsRefundable.code: "amount",
    ExtensionConflictsWithCancel.code: "extend_days",
    InvalidProration.code: "extend_days",  # _days' refusal
}


def _timeline(refund: Any) -> list[dict[str, Any]]:
    return [
        {"what": action_words(t.action), "who": actor_words(t.actor, t.actor_name), "note": t.note, "at": t.at}
        for t in refund.timeline
    ]


async def _page(
    request: Request,
    conn: asyncpg.Connection,
    user: SignedIn,
    refund_id: str,
    now: datetime,
    *,
    error: str | DomainError | ApiError | None = None,
    error_field: str | None = None,
    status_code: int = 200,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    refund = await refund_view(conn, user.merchant_id, refund_id)  # another merchant's: refund_not_found, a 404
    payment = await payment_view(conn, user.merchant_id, refund.payment_id)
    policy = await policies.effective_policy(conn, user.merchant_id, payment.product.id)
    row = await repository.get_refund(conn, refund_id, merchant_id=user.merchant_id)
    subscription = payment.subscription
    payment_row = await repository.get_payment(conn, user.merchant_id, refund.payment_id) if subscription else None
    period = period_days(subscription.current_period_start, subscription.current_period_end) if subscription else None
    terms = RequestTerms.kept_or_todays(row["judged_by"] if row else None, policy, created_at=refund.created_at)
    flags = flag_explanations(
        refund.flags, terms, paid_at=payment.paid_at, category=payment.product.category, reason=refund.reason
    )
    return render(
        request,
        "refund.html",
        user,
        section="refunds",
        refund=refund,
        payment=payment,
        flags=flags,
        timeline=_timeline(refund),
        period_days=period,
        overdue=refund.status == "pending"
        and row is not None
        and row["review_due_at"] is not None
        and row["review_due_at"] <= now,
        form=form or {},
        pending_badge=await queries.pending_count(conn, user.merchant_id),
        approvals_needed=policy.approvals_required(
            refund.amount, refund.currency, refunded=await repository.refunded_besides(conn, payment.id, refund_id)
        ),
        two_people_because=two_people_because(policy, refund.currency),
        # What the next approver must approve too: the form offers the last one's choices (they all agree).
        approvals=[
            {
                "who": actor_words(a["actor"], a["actor_name"]),
                "amount": a["amount"],
                "subscription_action": a["subscription_action"],
                "extend_days": a["extend_days"],
                "choice": subscription_choice(a["subscription_action"], a["extend_days"]),
                "note_to_customer": a["customer_note"],
            }
            for a in (await repository.approvals_that_count(conn, refund_id) if refund.status == "pending" else [])
        ],
        customer_wish=row["cancel_subscription"] if row else None,
        customer_asked=refund.channel in CUSTOMER_CHANNELS,  # only then is a rejection told to the customer
        subscription_ended=bool(payment_row and payment_row["subscription_ended"]),
        error=error,
        error_field=error_field,
        status_code=status_code,
        now=now,
    )


@router.get("/{refund_id}")
async def refund_page(request: Request, refund_id: PathId, user: CurrentUser, db: Db, now: Now) -> HTMLResponse:
    async with db.snapshot() as conn:
        return await _page(request, conn, user, refund_id, now)


@router.get("/{refund_id}/status")
async def refund_status(refund_id: PathId, user: CurrentUser, db: Db) -> JSONResponse:
    """What the refund page polls while the refund is processing: its status and timeline, no reload."""
    async with db.connection() as conn:
        refund = await refund_view(conn, user.merchant_id, refund_id)
    return JSONResponse(
        {
            "status": refund.status,
            "label": STATUS_LABELS.get(refund.status, refund.status),
            "final": refund.status in _FINAL,
            "timeline_html": render_fragment("_timeline.html", timeline=_timeline(refund)),
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/{refund_id}/prorate")
async def prorate_preview(
    refund_id: PathId,
    user: FormUser,
    db: Db,
    days: Annotated[int, Form(ge=1, le=3660)],
    period: Annotated[int, Form(ge=1, le=3660)],
) -> JSONResponse:
    """The proration calculator's answer: the payment's amount × days / period, by ``proration.prorate``."""
    async with db.snapshot() as conn:
        refund = await refund_view(conn, user.merchant_id, refund_id)
        payment = await repository.get_payment(conn, user.merchant_id, refund.payment_id)
    assert payment is not None
    try:
        amount = prorate(payment["amount"], days, period, step=provider_step(payment["currency"]))
    except InvalidProration as exc:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=422)
    return JSONResponse({"amount": min(amount, refund.amount), "prorated": amount, "currency": refund.currency})


@router.post("/{refund_id}/approve")
async def approve(
    request: Request,
    refund_id: PathId,
    user: FormUser,
    db: Db,
    now: Now,
    links: ToCustomer,
    amount: Annotated[str, Form(max_length=40)] = "",
    subscription_action: Annotated[str, Form(max_length=40)] = "",
    extend_days: Annotated[str, Form(max_length=10)] = "",
    note: TypedText = "",
    note_to_customer: TypedText = "",
) -> Response:
    note, note_to_customer = as_typed(note), as_typed(note_to_customer)
    form = {
        "amount": amount,
        "subscription_action": subscription_action,
        "extend_days": extend_days,
        "note": note,
        "note_to_customer": note_to_customer,
    }
    try:
        require(user.role, Permission.DECIDE_REFUNDS)
        if said := too_long("The message to the customer", note_to_customer) or too_long("The note", note):
            return await _asked_again(request, db, user, refund_id, now, said, form)
        async with db.transaction() as conn:
            refund = await refund_view(conn, user.merchant_id, refund_id)
            await refund_decisions.approve_refund(
                conn,
                user.merchant_id,
                refund_id,
                actor=actors.person(user.user_id),
                links=links,
                note=note.strip() or None,
                note_to_customer=note_to_customer.strip() or None,
                amount=parse_amount(amount, refund.currency) if amount.strip() else None,
                subscription_action=_subscription_action(subscription_action),
                extend_days=_days(extend_days),
            )
            after = await repository.get_refund(conn, refund_id, merchant_id=user.merchant_id)
            done = await _approval_done(conn, after)
    except DomainError as exc:
        return await _refused(request, db, user, refund_id, now, exc, form)
    return see_other(f"/dashboard/refunds/{refund_id}?done={done}")


@router.post("/{refund_id}/reject")
async def reject(
    request: Request, refund_id: PathId, user: FormUser, db: Db, now: Now, links: ToCustomer, note: TypedText = ""
) -> Response:
    note = as_typed(note)
    try:
        require(user.role, Permission.DECIDE_REFUNDS)
        if said := too_long("The note", note):
            return await _asked_again(request, db, user, refund_id, now, said, {"reject_note": note})
        async with db.transaction() as conn:
            await refund_decisions.reject_refund(
                conn,
                user.merchant_id,
                refund_id,
                actor=actors.person(user.user_id),
                note=note.strip() or None,
                links=links,
            )
            rejected = await repository.get_refund(conn, refund_id, merchant_id=user.merchant_id)
    except DomainError as exc:
        return await _refused(request, db, user, refund_id, now, exc, {"reject_note": note})
    return see_other(f"/dashboard/refunds/{refund_id}?done={_rejection_done(rejected)}")


async def _approval_done(conn: asyncpg.Connection, refund: dict[str, Any] | None) -> str:
    """The notice after an approval, as the refund now is: a cancel only (closed as rejected) says whether it asked
    the cancellation, or found the subscription ended or set to end already (``subscription_cancel_not_asked``)."""
    assert refund is not None
    if refund["status"] == "processing":
        return "approved"
    if refund["status"] != "rejected":
        return "approval_recorded"
    timeline = await repository.refund_timeline(conn, refund["id"])
    not_asked = any(entry["action"] == "subscription_cancel_not_asked" for entry in timeline)
    return "cancel_only_not_asked" if not_asked else "cancel_only"


def _rejection_done(refund: dict[str, Any] | None) -> str:
    """The notice after a rejection: only a customer's own request is told to them, with the note if one was given
    (a repeat's notice is the first's: the note recorded)."""
    assert refund is not None
    if refund["channel"] not in CUSTOMER_CHANNELS:
        return "rejected_untold"
    return "rejected" if refund["decision_note"] else "rejected_without_note"


def _subscription_action(chosen: str) -> SubscriptionAction | None:
    if not chosen:
        return None
    try:
        return SubscriptionAction(chosen)
    except ValueError:
        raise InvalidSubscriptionAction("choose refund and cancel, refund only, or cancel only") from None


def _days(typed: str) -> int | None:
    typed = typed.strip()
    if not typed:
        return None
    if not typed.isdecimal() or not 0 < int(typed) <= 365:  # isdigit() would let "²" through to int()
        raise InvalidProration("extend by 1 to 365 days")
    return int(typed)


async def _refused(
    request: Request, db: Db, user: SignedIn, refund_id: str, now: datetime, exc: DomainError, form: dict[str, str]
) -> HTMLResponse:
    """The page again, with the rule's words and what was typed; the status is the API's for that code."""
    async with db.snapshot() as conn:
        if isinstance(exc, InvalidTransition):
            exc = await _already_decided(conn, user, refund_id) or exc
        return await _page(
            request,
            conn,
            user,
            refund_id,
            now,
            error=exc,
            error_field=_FIELD_REFUSED.get(exc.code),
            status_code=status_of(type(exc)),
            form=form,
        )


async def _asked_again(
    request: Request, db: Db, user: SignedIn, refund_id: str, now: datetime, said: str, form: dict[str, str]
) -> HTMLResponse:
    """The page again, with what was typed and what to change in it (nothing was decided)."""
    async with db.snapshot() as conn:
        return await _page(request, conn, user, refund_id, now, error=said, status_code=422, form=form)


async def _already_decided(conn: asyncpg.Connection, user: SignedIn, refund_id: str) -> InvalidTransition | None:
    """What was decided, when someone else decided while this person had the page open (None: still pending)."""
    refund = await repository.get_refund(conn, refund_id, merchant_id=user.merchant_id)
    if refund is None or refund["status"] == "pending":
        return None
    if refund["subscription_action"] == SubscriptionAction.CANCEL_ONLY.value:
        decided = "closed as cancel only (the subscription ends at the close of its period)"
    elif refund["status"] == "rejected":
        decided = "rejected"
    else:
        status = str(STATUS_LABELS.get(refund["status"], refund["status"])).lower()
        decided = f"approved for {format_amount(refund['amount'], refund['currency'])} ({status})"
    said = f"Already decided: {decided}. Your decision was not recorded."
    return InvalidTransition(said, current_status=RefundStatus(refund["status"]))
