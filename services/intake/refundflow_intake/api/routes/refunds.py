from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Response

from refundflow_intake import listing_queries, refund_decisions, refund_requests
from refundflow_intake.api.dependencies import CurrentCaller, Db, Now, ToCustomer
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import PathId, QueryId, RequiredIdempotencyKey
from refundflow_intake.api.links import id_links
from refundflow_intake.api.routes.payments import Limit, StartingAfter
from refundflow_intake.api.schemas import (
    Approval,
    ProrationIn,
    RefundCreate,
    RefundList,
    RefundOut,
    RefundQuote,
    RefundQuoteRequest,
    RefundSummary,
    Rejection,
)
from refundflow_intake.api.views import refund_view
from refundflow_intake.domain import (
    AmountNotRepresentable,
    ApprovalExceedsRequest,
    CurrencyMismatch,
    ExtensionConflictsWithCancel,
    IdempotencyKeyBlank,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidProration,
    InvalidTransition,
    NotASubscription,
    PaymentIsDisputed,
    PaymentNotFound,
    ProviderPaymentConflict,
    ReasonDetailsRequired,
    RefundExceedsRefundable,
    RefundNotFound,
    RefundStatus,
    SecondApprovalNeedsAPerson,
)
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/refunds", tags=["refunds"], route_class=RetriedRoute)

_REQUEST_ERRORS = (
    PaymentNotFound,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    RefundExceedsRefundable,
    AmountNotRepresentable,
    CurrencyMismatch,
    InvalidProration,
    ReasonDetailsRequired,
)


def _proration(body: ProrationIn | None) -> refund_requests.Proration | None:
    return refund_requests.Proration(days=body.days, period_days=body.period_days) if body else None


_CREATED = id_links(
    201,
    "the refund request",
    "refund_id",
    "GET /v1/refunds/{refund_id}",
    "POST /v1/refunds/{refund_id}/approve",
    "POST /v1/refunds/{refund_id}/reject",
)


@router.post(
    "",
    status_code=201,
    responses=documented(*_REQUEST_ERRORS, IdempotencyKeyRequired, IdempotencyKeyBlank, IdempotencyKeyReused)
    | _CREATED,
)
async def request_refund(
    body: RefundCreate,
    caller: CurrentCaller,
    db: Db,
    now: Now,
    links: ToCustomer,
    response: Response,
    idempotency_key: RequiredIdempotencyKey,
) -> RefundOut:
    """Ask for a refund of a payment: it waits, pending, for your decision (or your policy approves it). The
    ``Idempotency-Key`` header is required (a new one for each refund you mean): a retry with the same key and body
    answers the first request's refund (``Idempotent-Replayed: true``), never a second refund."""
    async with db.transaction() as conn:
        refund_id, replayed = await refund_requests.request_refund_once(
            conn,
            caller.merchant_id,
            idempotency_key,
            body.model_dump(mode="json"),
            payment_id=body.payment_id,
            reason=body.reason,
            reason_details=body.reason_details,
            amount=body.amount,
            proration=_proration(body.proration),
            currency=body.currency,
            actor=caller.actor,
            now=now,
            links=links,
        )
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/refunds/{refund_id}"
        return await refund_view(conn, caller.merchant_id, refund_id)


@router.post("/quote", responses=documented(*_REQUEST_ERRORS))
async def quote_refund(body: RefundQuoteRequest, caller: CurrentCaller, db: Db, now: Now) -> RefundQuote:
    """What a refund request would come to (amount, flags, approvals), without creating anything."""
    async with db.snapshot() as conn:
        quote = await refund_requests.quote_refund(
            conn,
            caller.merchant_id,
            payment_id=body.payment_id,
            reason=body.reason,
            amount=body.amount,
            proration=_proration(body.proration),
            currency=body.currency,
            now=now,
        )
    return RefundQuote(**dataclasses.asdict(quote))


@router.get("", responses=documented(InvalidCursor))
async def list_refunds(
    caller: CurrentCaller,
    db: Db,
    status: RefundStatus | None = None,
    payment_id: QueryId = None,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> RefundList:
    """Your refunds, newest first."""
    async with db.snapshot() as conn:
        rows, has_more = await listing_queries.list_refunds(
            conn,
            caller.merchant_id,
            limit=limit,
            starting_after=starting_after,
            status=status.value if status else None,
            payment_id=payment_id,
        )
    return RefundList(data=[RefundSummary(**r) for r in rows], has_more=has_more)


@router.get("/{refund_id}", responses=documented(RefundNotFound))
async def get_refund(refund_id: PathId, caller: CurrentCaller, db: Db) -> RefundOut:
    """The refund with its timeline: every decision and status change, who made it, why and when."""
    async with db.connection() as conn:
        return await refund_view(conn, caller.merchant_id, refund_id)


_APPROVAL_ERRORS = (
    RefundNotFound,
    InvalidTransition,
    ApprovalExceedsRequest,
    NotASubscription,
    ExtensionConflictsWithCancel,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    RefundExceedsRefundable,
    AmountNotRepresentable,
    SecondApprovalNeedsAPerson,
)


@router.post("/{refund_id}/approve", responses=documented(*_APPROVAL_ERRORS))
async def approve_refund(
    refund_id: PathId, caller: CurrentCaller, db: Db, links: ToCustomer, body: Approval | None = None
) -> RefundOut:
    """Approve a pending refund: its amount is held in your balance and it goes to the payment provider. Checked
    again now: the payment must not be disputed, and the amount must fit what is still refundable. Above your
    policy's second-approval amount it needs two approvers of the same amount, subscription action and extension,
    and approvals count people: an API key may give the first approval, but the one that completes it must come
    from a person signed in to the dashboard (409 ``second_approval_needs_a_person``). An approval of another
    amount, action or extension starts them over, and an approval counts only while its author may still decide
    refunds (not a removed or demoted member's, nor a revoked key's). The customer is told the amount, and
    ``note_to_customer`` (the completing approver's, else the latest agreeing approver's; ``note`` stays with your
    team). Once approved (whatever the provider did since), the same approval again answers 200 and changes
    nothing, as does a ``cancel_only`` asked again of the request it closed; one asking another amount, action,
    extension or note is 409 ``invalid_status_transition``."""
    body = body or Approval()
    async with db.transaction() as conn:
        await refund_decisions.approve_refund(
            conn,
            caller.merchant_id,
            refund_id,
            actor=caller.actor,
            links=links,
            note=body.note,
            note_to_customer=body.note_to_customer,
            amount=body.amount,
            subscription_action=body.subscription_action,
            extend_days=body.extend_days,
        )
        return await refund_view(conn, caller.merchant_id, refund_id)


@router.post("/{refund_id}/reject", responses=documented(RefundNotFound, InvalidTransition))
async def reject_refund(
    refund_id: PathId, caller: CurrentCaller, db: Db, links: ToCustomer, body: Rejection | None = None
) -> RefundOut:
    """Reject a pending refund (``refund.rejected``); the note is told to the customer when they asked for it, not
    for a refund made through the API, which tells the customer nothing. Once rejected, a rejection with no note or
    the same note answers 200 again; one with another note is 409 ``invalid_status_transition``."""
    async with db.transaction() as conn:
        await refund_decisions.reject_refund(
            conn, caller.merchant_id, refund_id, actor=caller.actor, note=body.note if body else None, links=links
        )
        return await refund_view(conn, caller.merchant_id, refund_id)
