"""The merchant's decisions on a refund request, and the provider's outcome. Each runs in the caller's
transaction: the status change, its audit entry and its events commit together."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from refundflow_intake import ledger, repository
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.domain import (
    ApprovalExceedsRequest,
    NotASubscription,
    RefundNotFound,
    RefundStatus,
    SubscriptionAction,
    check_transition,
)
from refundflow_shared.events import (
    RefundApproved,
    RefundRejected,
    SubscriptionCancelRequested,
    SubscriptionExtensionGranted,
)
from refundflow_shared.outbox import add_event

SOURCE = "refundflow/intake"

Row = dict[str, Any]


async def _pending_refund(conn: asyncpg.Connection, merchant_id: str, refund_id: str) -> Row:
    structlog.contextvars.bind_contextvars(refund_id=refund_id)
    refund = await repository.get_refund(conn, refund_id, merchant_id=merchant_id, lock=True)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    structlog.contextvars.bind_contextvars(payment_id=refund["payment_id"])
    return refund


async def approve_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    refund_id: str,
    *,
    actor: str,
    note: str | None = None,
    amount: int | None = None,
    subscription_action: SubscriptionAction | None = None,
    extend_days: int | None = None,
) -> Row:
    """Approve (possibly less than asked): the refund goes to the provider. Above the policy's second-approval
    amount the first approval is recorded and a different actor must approve too. ``cancel_only`` moves no
    money: the request closes as rejected and the subscription ends at the period's end."""
    refund = await _pending_refund(conn, merchant_id, refund_id)
    if not check_transition(RefundStatus(refund["status"]), RefundStatus.PROCESSING):
        return refund
    payment = await repository.get_payment(conn, merchant_id, refund["payment_id"])
    assert payment is not None, "a refund always has its payment"
    is_subscription = payment["subscription_id"] is not None
    if not is_subscription and (subscription_action is not None or extend_days is not None):
        raise NotASubscription(f"payment {payment['id']} is not for a subscription")
    action = subscription_action or (SubscriptionAction.REFUND_AND_CANCEL if is_subscription else None)
    if action is SubscriptionAction.CANCEL_ONLY:
        return await _close_as_cancel_only(conn, refund, payment, actor=actor, note=note, extend_days=extend_days)
    approved = refund["amount"] if amount is None else amount
    if not 0 < approved <= refund["amount"]:
        raise ApprovalExceedsRequest(f"approve between 1 and the {refund['amount']} asked for, not {approved}")

    policy = await policies.effective_policy(conn, merchant_id, payment["product_id"])
    required = policy.approvals_required(approved, refund["currency"])
    approvers = await repository.approvers_of(conn, refund_id)
    first_time = actor not in approvers
    if first_time:
        await repository.add_approval(conn, refund_id, actor)
        approvers.append(actor)
    if len(approvers) < required:
        if first_time:  # the same actor approving again is a repeat: nothing changes
            step = f"approval_{len(approvers)}_of_{required}"
            await repository.add_timeline_entry(conn, refund_id, RefundStatus.PENDING, actor, note, action=step)
        return refund

    decision = {
        "status": RefundStatus.PROCESSING.value,
        "amount": approved,
        "subscription_action": action.value if action else None,
        "extend_days": extend_days,
        "note": note,
    }
    await repository.record_decision(conn, refund_id, decision)
    await repository.add_timeline_entry(conn, refund_id, RefundStatus.PROCESSING, actor, note, action="approved")
    await add_event(
        conn,
        RefundApproved(
            refund_id=refund_id,
            payment_id=payment["id"],
            merchant_id=merchant_id,
            customer_email=payment["customer_email"],
            amount=approved,
            currency=refund["currency"],
            provider_payment_id=payment["provider_payment_id"],
            payment_amount=payment["amount"],
            approved_by=actor,
        ),
        source=SOURCE,
    )
    if action is SubscriptionAction.REFUND_AND_CANCEL:
        await _request_cancel(conn, payment, refund_id=refund_id, at_period_end=False, actor=actor)
    if extend_days is not None:
        await _grant_extension(conn, payment, refund_id=refund_id, days=extend_days, actor=actor)
    return {**refund, **decision}


async def _close_as_cancel_only(
    conn: asyncpg.Connection, refund: Row, payment: Row, *, actor: str, note: str | None, extend_days: int | None
) -> Row:
    decision = {
        "status": RefundStatus.REJECTED.value,
        "amount": refund["amount"],
        "subscription_action": SubscriptionAction.CANCEL_ONLY.value,
        "extend_days": extend_days,
        "note": note,
    }
    await repository.record_decision(conn, refund["id"], decision)
    await repository.add_timeline_entry(conn, refund["id"], RefundStatus.REJECTED, actor, note, action="cancel_only")
    await _announce_rejection(conn, refund, payment, note)
    await _request_cancel(conn, payment, refund_id=refund["id"], at_period_end=True, actor=actor)
    if extend_days is not None:
        await _grant_extension(conn, payment, refund_id=refund["id"], days=extend_days, actor=actor)
    return {**refund, **decision}


async def cancel_subscription(
    conn: asyncpg.Connection, merchant_id: str, payment: Row, *, at_period_end: bool, actor: str
) -> None:
    """Cancel without any refund (the customer keeps access until the period ends when ``at_period_end``)."""
    if payment["subscription_id"] is None:
        raise NotASubscription(f"payment {payment['id']} is not for a subscription")
    await _request_cancel(conn, payment, refund_id=None, at_period_end=at_period_end, actor=actor)


async def _request_cancel(
    conn: asyncpg.Connection, payment: Row, *, refund_id: str | None, at_period_end: bool, actor: str
) -> None:
    await add_event(
        conn,
        SubscriptionCancelRequested(
            payment_id=payment["id"],
            merchant_id=payment["merchant_id"],
            subscription_id=payment["subscription_id"],
            at_period_end=at_period_end,
            refund_id=refund_id,
            requested_by=actor,
        ),
        source=SOURCE,
    )


async def _grant_extension(conn: asyncpg.Connection, payment: Row, *, refund_id: str, days: int, actor: str) -> None:
    await add_event(
        conn,
        SubscriptionExtensionGranted(
            payment_id=payment["id"],
            merchant_id=payment["merchant_id"],
            subscription_id=payment["subscription_id"],
            days=days,
            refund_id=refund_id,
            granted_by=actor,
        ),
        source=SOURCE,
    )


async def _announce_rejection(conn: asyncpg.Connection, refund: Row, payment: Row, note: str | None) -> None:
    await add_event(
        conn,
        RefundRejected(
            refund_id=refund["id"],
            payment_id=payment["id"],
            merchant_id=payment["merchant_id"],
            customer_email=payment["customer_email"],
            note=note,
        ),
        source=SOURCE,
    )


async def reject_refund(
    conn: asyncpg.Connection, merchant_id: str, refund_id: str, *, actor: str, note: str | None
) -> Row:
    """Reject a pending request; ``note`` goes to the customer with ``refund.rejected``."""
    refund = await _pending_refund(conn, merchant_id, refund_id)
    if not check_transition(RefundStatus(refund["status"]), RefundStatus.REJECTED):
        return refund
    payment = await repository.get_payment(conn, merchant_id, refund["payment_id"])
    assert payment is not None, "a refund always has its payment"
    decision = {"status": RefundStatus.REJECTED.value, "amount": refund["amount"], "note": note}
    await repository.record_decision(conn, refund_id, decision)
    await repository.add_timeline_entry(conn, refund_id, RefundStatus.REJECTED, actor, note, action="rejected")
    await _announce_rejection(conn, refund, payment, note)
    return {**refund, **decision}


async def record_refund_outcome(
    conn: asyncpg.Connection,
    refund_id: str,
    outcome: RefundStatus,
    *,
    actor: str,
    failure_reason: str | None = None,
) -> None:
    """The provider's verdict, reported by the processor: finish the refund, the payment's totals and the
    merchant's balance."""
    refund = await repository.get_refund(conn, refund_id, lock=True)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_id}")
    if not check_transition(RefundStatus(refund["status"]), outcome):
        return
    await repository.update_refund_status(conn, refund_id, outcome, failure_reason=failure_reason)
    await repository.add_timeline_entry(conn, refund_id, outcome, actor, failure_reason)
    if outcome is RefundStatus.SUCCEEDED:
        await repository.add_to_refunded_amount(conn, refund["payment_id"], refund["amount"])
        await ledger.debit_refund(conn, refund)
