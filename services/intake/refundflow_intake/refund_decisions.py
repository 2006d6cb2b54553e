"""The merchant's decisions on a refund request. Each runs in the caller's transaction: the status change, its
audit entry, its ledger entry and its events commit together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from refundflow_intake import actors, repository, subscription_requests
from refundflow_intake.approval_rules import (
    ApprovalAsk,
    ApprovalContext,
    ApprovalDecision,
    Approve,
    AwaitAnotherApprover,
    CancelOnly,
    Decided,
    decide_approval,
)
from refundflow_intake.dashboard import refund_words
from refundflow_intake.domain import (
    CUSTOMER_CHANNELS,
    HOLDING_STATUSES,
    InvalidTransition,
    RefundNotFound,
    RefundStatus,
    SubscriptionAction,
    check_transition,
)
from refundflow_intake.portal.links import CustomerLinks, to_customer
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.events import RefundApproved, RefundRejected
from refundflow_shared.money import format_amount

Row = dict[str, Any]


async def locked_refund(conn: asyncpg.Connection, refund_id: str, merchant_id: str | None) -> tuple[Row, Row]:
    """The refund and its payment, both locked: the payment first, as every writer does, so that approvals,
    requests and outcomes on one payment take their turns (and never deadlock)."""
    structlog.contextvars.bind_contextvars(refund_id=refund_id)
    locked = await repository.lock_refund_and_payment(conn, refund_id, merchant_id)
    if locked is None:
        raise RefundNotFound(f"no refund {refund_id}")
    refund, payment = locked
    structlog.contextvars.bind_contextvars(payment_id=payment["id"])
    return refund, payment


async def approve_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    refund_id: str,
    *,
    actor: str,
    links: CustomerLinks,
    note: str | None = None,
    note_to_customer: str | None = None,
    amount: int | None = None,
    subscription_action: SubscriptionAction | None = None,
    extend_days: int | None = None,
) -> None:
    """Approve (possibly less than asked): the amount is held and the refund goes to the provider. Above the
    policy's second-approval amount a different actor must approve the same amount, subscription action and
    extension too; an approval counts only while its author may still decide refunds. ``cancel_only`` moves no
    money: the request closes as rejected and the subscription ends at the period's end. ``note`` stays with the
    team; ``note_to_customer`` is told to the customer (say why, when approving less than asked)."""
    refund, payment = await locked_refund(conn, refund_id, merchant_id)
    status = RefundStatus(refund["status"])
    standing = await repository.standing(conn, payment, refund_id)
    context = ApprovalContext(
        status=status,
        requested=refund["amount"],
        currency=refund["currency"],
        payment_amount=payment["amount"],
        held_by_others=standing.held - (refund["amount"] if status in HOLDING_STATUSES else 0),
        refunded_by_others=standing.refunded_by_others,
        disputed=standing.disputed,
        provider_payment_conflict=payment["provider_payment_conflict"],
        is_subscription=payment["subscription_id"] is not None,
        approvals=standing.approvals,
        customer_keeps_subscription=refund["cancel_subscription"] is False,
        subscription_ended=payment["subscription_ended"],
        decided=None if status is RefundStatus.PENDING else await _decided(conn, refund),
    )
    policy = standing.policy
    ask = ApprovalAsk(
        actor=actor,
        by_person=actors.is_person(actor),
        amount=amount,
        subscription_action=subscription_action,
        extend_days=extend_days,
        note=note,
        note_to_customer=note_to_customer,
    )
    decision = decide_approval(context, ask, policy)
    if isinstance(decision, AwaitAnotherApprover | Approve) and standing.lapsed:
        # They counted for nothing: the refund lists only the approvals that count.
        await repository.discard_approvals(conn, refund_id, standing.lapsed)
    told = _Told(note=note, to_customer=note_to_customer, links=links, policy=policy)
    await _apply(conn, refund, payment, decision, actor=actor, told=told)


async def _decided(conn: asyncpg.Connection, refund: Row) -> Decided:
    action = refund["subscription_action"]
    return Decided(
        subscription_action=SubscriptionAction(action) if action else None,
        extend_days=refund["extend_days"],
        note=refund["decision_note"],
        note_to_customer=refund["customer_note"],
        earlier_approvers=await repository.approvers_before_the_decision(conn, refund),
    )


@dataclass(frozen=True)
class _Told:
    """What a decision says: to the team (``note``), to the customer, and how the customer's emails are made."""

    note: str | None
    to_customer: str | None
    links: CustomerLinks
    policy: RefundPolicy


async def _apply(
    conn: asyncpg.Connection, refund: Row, payment: Row, decision: ApprovalDecision, *, actor: str, told: _Told
) -> None:
    refund_id = refund["id"]
    if isinstance(decision, CancelOnly):
        await _close_as_cancel_only(conn, refund, payment, actor=actor, told=told, extend_days=decision.extend_days)
        return
    if not isinstance(decision, AwaitAnotherApprover | Approve):
        return  # unchanged: a repeat
    if decision.discarded:
        await repository.discard_approvals(conn, refund_id, decision.discarded)
        await repository.add_timeline_entry(
            conn, refund_id, RefundStatus.PENDING, actor, _restarted(decision, refund), action="approval_restarted"
        )
    if isinstance(decision, AwaitAnotherApprover):
        await repository.add_approval(conn, refund_id, actor, decision.approval)
        await repository.add_timeline_entry(
            conn, refund_id, RefundStatus.PENDING, actor, told.note, action=decision.step
        )
        return

    action = decision.action
    decided = {
        "status": RefundStatus.PROCESSING.value,
        "amount": decision.amount,
        "subscription_action": action.value if action else None,
        "extend_days": decision.extend_days,
        "note": told.note,
        "customer_note": decision.note_to_customer,
    }
    audit = repository.Audit(actor, told.note, action="approved")
    hold = ("refund_hold", refund_id, {**refund, "amount": decision.amount})
    customer = to_customer(told.links, payment)
    approved = RefundApproved(
        refund_id=refund_id,
        payment_id=payment["id"],
        merchant_id=payment["merchant_id"],
        customer_email=payment["customer_email"],
        amount=decision.amount,
        currency=refund["currency"],
        provider_payment_id=payment["provider_payment_id"],
        payment_amount=payment["amount"],
        approved_by=actor,
        requested_amount=refund["amount"] if refund["amount"] > decision.amount else None,
        note_to_customer=decision.note_to_customer,
        process_time=told.policy.process_time,
        channel=refund["channel"],
        auto_approved=actor == actors.AUTO_APPROVER,  # as it was made: the customer was told nothing yet
        subscription_continues=await _keeps_what_the_customer_would_cancel(conn, refund, payment, action),
        **customer,
    )
    await repository.record_decision(conn, refund_id, decided, audit, approved=True, entries=[hold], events=[approved])
    if action is SubscriptionAction.REFUND_AND_CANCEL:
        new = not await repository.cancel_already_asked(conn, payment, at_period_end=False)
        await _ask_cancel(
            conn, refund, payment, customer, RefundStatus.PROCESSING, new, actor=actor, at_period_end=False, told=None
        )
    if decision.extend_days is not None:
        await subscription_requests.grant_extension(
            conn, payment, customer, refund_id=refund_id, days=decision.extend_days, actor=actor
        )


def _restarted(decision: AwaitAnotherApprover | Approve, refund: Row) -> str:
    """The timeline's words for approvals discarded: what the new one approves, which they did not."""
    if isinstance(decision, Approve):
        amount, action, days = decision.amount, decision.action, decision.extend_days
    else:
        amount, action, days = (
            decision.approval.amount,
            decision.approval.subscription_action,
            decision.approval.extend_days,
        )
    approving = format_amount(amount, refund["currency"])
    if decision.other_amount:
        return f"earlier approvals were for another amount; approving {approving} starts over"
    chose = refund_words.subscription_choice(action.value if action else None, days) or "no extension"
    if decision.choice_unrecorded:
        unrecorded = "approvals from before the upgrade recorded no subscription choice"
        return f"{unrecorded}; approving {approving}, {chose}, starts over"
    return f"earlier approvals chose otherwise for the subscription; approving {approving}, {chose}, starts over"


async def _close_as_cancel_only(
    conn: asyncpg.Connection, refund: Row, payment: Row, *, actor: str, told: _Told, extend_days: int | None
) -> None:
    decision = {
        "status": RefundStatus.REJECTED.value,
        "amount": refund["amount"],
        "subscription_action": SubscriptionAction.CANCEL_ONLY.value,
        "extend_days": extend_days,
        "note": told.note,
        "customer_note": told.to_customer,
    }
    customer = to_customer(told.links, payment)
    # Asked only when it asks something new; else no cancellation follows to tell the customer: the rejection does.
    new = not await repository.cancel_already_asked(conn, payment, at_period_end=True)
    rejected = _rejection(refund, payment, customer, told.to_customer, cancel_only=True, cancellation_follows=new)
    await repository.record_decision(
        conn, refund["id"], decision, repository.Audit(actor, told.note, action="cancel_only"), events=[rejected]
    )
    await _ask_cancel(
        conn,
        refund,
        payment,
        customer,
        RefundStatus.REJECTED,
        new,
        actor=actor,
        at_period_end=True,
        told=told.to_customer,
        after_extension=extend_days is not None,  # the customer is told the access end the extension makes
        no_refund=True,
    )
    if extend_days is not None:
        await subscription_requests.grant_extension(
            conn, payment, customer, refund_id=refund["id"], days=extend_days, actor=actor, last_period=True
        )


CANCEL_NOT_ASKED = "The subscription was cancelled already, or its cancellation asked already: not asked again"


async def _ask_cancel(
    conn: asyncpg.Connection,
    refund: Row,
    payment: Row,
    customer: Row,
    status: RefundStatus,
    new: bool,
    *,
    actor: str,
    at_period_end: bool,
    told: str | None,
    after_extension: bool = False,
    no_refund: bool = False,
) -> None:
    """Ask the provider to cancel the subscription as decided, unless that asks nothing ``new`` (ended, or cancelled
    or asked to be this way already: ``repository.cancel_already_asked``): asked again, the customer hears of the
    cancellation twice. The timeline says so."""
    if not new:
        await repository.add_timeline_entry(
            conn, refund["id"], status, actor, CANCEL_NOT_ASKED, action="subscription_cancel_not_asked"
        )
        return
    await subscription_requests.request_cancel(
        conn,
        payment,
        customer,
        refund_id=refund["id"],
        at_period_end=at_period_end,
        actor=actor,
        note_to_customer=told,
        after_extension=after_extension,
        no_refund=no_refund,
        channel=refund["channel"],
    )


def _rejection(
    refund: Row,
    payment: Row,
    customer: Row,
    note: str | None,
    *,
    cancel_only: bool,
    cancellation_follows: bool = True,
    subscription_continues: bool = False,
) -> RefundRejected:
    return RefundRejected(
        refund_id=refund["id"],
        payment_id=payment["id"],
        merchant_id=payment["merchant_id"],
        customer_email=payment["customer_email"],
        note=note,
        cancel_only=cancel_only,
        cancellation_follows=cancellation_follows,
        channel=refund["channel"],
        subscription_continues=subscription_continues,
        **customer,
    )


async def _keeps_what_the_customer_would_cancel(
    conn: asyncpg.Connection, refund: Row, payment: Row, action: SubscriptionAction | None
) -> bool:
    """The customer asked to cancel their subscription too, and the decision leaves it running: they are told, or
    they could believe it cancelled until it renews. Not running once anything ends it: a cancel, now or at its
    period's end, asked or made, through any payment of it."""
    if refund["cancel_subscription"] is not True or payment["subscription_id"] is None:
        return False  # asked no such thing (the one read below only for those who did)
    if action in (SubscriptionAction.REFUND_AND_CANCEL, SubscriptionAction.CANCEL_ONLY):
        return False
    return not await repository.cancel_already_asked(conn, payment, at_period_end=True)


async def reject_refund(
    conn: asyncpg.Connection,
    merchant_id: str,
    refund_id: str,
    *,
    actor: str,
    note: str | None,
    links: CustomerLinks,
) -> None:
    """Reject a pending request; ``note`` goes with ``refund.rejected``, and to the customer when they asked for
    the refund (the merchant's own, made through the API, is dropped without telling them: the note stays with the
    team)."""
    refund, payment = await locked_refund(conn, refund_id, merchant_id)
    if not check_transition(RefundStatus(refund["status"]), RefundStatus.REJECTED):
        _check_repeats_the_rejection(refund, note)
        return
    told = note if refund["channel"] in CUSTOMER_CHANNELS else None
    decision = {"status": RefundStatus.REJECTED.value, "amount": refund["amount"], "note": note, "customer_note": told}
    continues = await _keeps_what_the_customer_would_cancel(conn, refund, payment, None)
    rejected = _rejection(
        refund, payment, to_customer(links, payment), note, cancel_only=False, subscription_continues=continues
    )
    audit = repository.Audit(actor, note, action="rejected")
    await repository.record_decision(conn, refund_id, decision, audit, events=[rejected])


def _check_repeats_the_rejection(refund: Row, note: str | None) -> None:
    """A rejection of a refund already rejected is a repeat unless it says another note (dropped, it was answered
    as done) or the request was closed as cancel only (the customer heard of the cancellation, not a rejection)."""
    rejected = RefundStatus.REJECTED
    if refund["subscription_action"] == SubscriptionAction.CANCEL_ONLY.value:
        said = "this request was already closed as cancel only: it cannot be rejected as well"
        raise InvalidTransition(said, current_status=rejected)
    if note is not None and note != refund["decision_note"]:
        said = "this refund was already rejected, with another note: a new note is not recorded"
        raise InvalidTransition(said, current_status=rejected)
