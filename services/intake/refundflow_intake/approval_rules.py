"""What one approval of a refund request decides, as a pure function of what was loaded. No I/O here.

``refund_decisions.approve_refund`` loads the refund, its payment, the policy and the approvals so far (under
the payment's row lock), calls ``decide_approval`` and applies the decision's writes and events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from refundflow_intake.domain import (
    APPROVED_STATUSES,
    ApprovalExceedsRequest,
    ExtensionConflictsWithCancel,
    InvalidTransition,
    NotASubscription,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    RefundExceedsRefundable,
    RefundStatus,
    SecondApprovalNeedsAPerson,
    SubscriptionAction,
    check_provider_can_refund,
    check_transition,
    refund_exceeds_refundable_message,
    refundable_amount,
)
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.money import format_amount


@dataclass(frozen=True)
class Approval:
    """What one approver of a pending refund approved, and told the customer: the next approver must approve the
    same amount, subscription action and extension for the two to count together."""

    amount: int
    subscription_action: SubscriptionAction | None = None  # as decided: the default made explicit
    extend_days: int | None = None
    note_to_customer: str | None = None

    def agrees_with(self, other: Approval) -> bool:
        """Approves the same: the message to the customer is not a choice approvers must agree on."""
        chosen = (self.amount, self.subscription_action, self.extend_days)
        return chosen == (other.amount, other.subscription_action, other.extend_days)


@dataclass(frozen=True)
class ApprovalContext:
    """The refund and its payment as they are now, under the payment's row lock."""

    status: RefundStatus
    requested: int  # what the request asks for
    currency: str
    payment_amount: int
    held_by_others: int  # held by every other refund of the payment, ours and external
    refunded_by_others: int  # sent or on its way by the others (not pending): counted toward the two-person rule
    disputed: bool
    provider_payment_conflict: bool
    is_subscription: bool
    approvals: Mapping[str, Approval]  # who approved so far and may still decide refunds, and what each approved
    customer_keeps_subscription: bool = False  # the customer asked (in the portal) to keep their subscription
    subscription_ended: bool = False  # cancelled now (or asked to be), or at a period end that has passed
    decided: Decided | None = None  # once the refund is no longer pending: what its decision recorded


@dataclass(frozen=True)
class Decided:
    """What the decision that took the refund out of pending recorded (the amount is then ``requested``)."""

    subscription_action: SubscriptionAction | None
    extend_days: int | None
    note: str | None
    note_to_customer: str | None
    # Who approved the decided amount before another completed the approval: theirs went only to the timeline.
    earlier_approvers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ApprovalAsk:
    actor: str
    by_person: bool = False  # a person signed in to the dashboard, not an API key or a rule
    amount: int | None = None  # None: all that was asked for
    subscription_action: SubscriptionAction | None = None
    extend_days: int | None = None
    note: str | None = None
    note_to_customer: str | None = None


@dataclass(frozen=True)
class Unchanged:
    """A repeat: approving again what is already approved (or already on its way)."""


@dataclass(frozen=True)
class CancelOnly:
    """No money moves: the request closes as rejected and the subscription ends at the period's end."""

    extend_days: int | None


@dataclass(frozen=True)
class AwaitAnotherApprover:
    """This approval is recorded; another approver must approve the same (amount, subscription action, extension)."""

    approval: Approval
    step: str  # e.g. approval_1_of_2, for the timeline
    discarded: tuple[str, ...]  # earlier approvers of something else: their approvals no longer count
    other_amount: bool = False  # what the discarded approved differs in amount (else in the subscription choice)
    choice_unrecorded: bool = False  # some discarded approved before subscription choices were recorded


@dataclass(frozen=True)
class Approve:
    """Enough approvers agree: the refund goes to the provider."""

    amount: int
    action: SubscriptionAction | None
    extend_days: int | None
    discarded: tuple[str, ...]
    other_amount: bool = False
    choice_unrecorded: bool = False
    # The completing approver's message, else the latest agreeing approver's: said once, it is not dropped.
    note_to_customer: str | None = None


ApprovalDecision = Unchanged | CancelOnly | AwaitAnotherApprover | Approve


def _default_action(context: ApprovalContext) -> SubscriptionAction | None:
    """A subscription refund cancels the subscription, unless its customer asked to keep it or it has ended."""
    if not context.is_subscription:
        return None
    keep = context.customer_keeps_subscription or context.subscription_ended
    return SubscriptionAction.REFUND_ONLY if keep else SubscriptionAction.REFUND_AND_CANCEL


def _cancel_conflict() -> ExtensionConflictsWithCancel:
    return ExtensionConflictsWithCancel(
        "a subscription cancelled now has no period to extend: choose refund_only or cancel_only to extend it"
    )


def _notes_asked(ask: ApprovalAsk, decided: Decided) -> dict[str, tuple[object, object]]:
    return {
        "extension": (ask.extend_days, decided.extend_days),
        "note": (ask.note, decided.note),
        "note to the customer": (ask.note_to_customer, decided.note_to_customer),
    }


def _asked_otherwise(asked: dict[str, tuple[object, object]]) -> list[str]:
    """What a repeated decision asks differently from what was recorded (what it leaves out, it does not ask)."""
    return [what for what, (wanted, recorded) in asked.items() if wanted is not None and wanted != recorded]


def _check_repeats_the_approval(context: ApprovalContext, ask: ApprovalAsk) -> None:
    """An approval of a refund already approved is a repeat when it asks nothing else (what it leaves out, it does
    not ask); one asking another amount, action, extension or note is refused: answered as done, it was dropped
    (someone approving from a page opened before another person decided, say). An approver who approved the
    decided amount before another completed it repeats its own approval, whatever else it asks: the decision
    recorded the completing approver's action and notes, not its."""
    decided = context.decided or Decided(None, None, None, None)
    if ask.actor in decided.earlier_approvers and ask.amount in (None, context.requested):
        return
    asked = {
        "amount": (ask.amount, context.requested),
        "subscription action": (ask.subscription_action, decided.subscription_action),
        **_notes_asked(ask, decided),
    }
    if other := _asked_otherwise(asked):
        raise InvalidTransition(
            f"this refund was already approved, for {context.requested} {context.currency} minor units: an approval"
            f" asking another {', '.join(other)} is not recorded",
            current_status=context.status,
        )


def _repeats_the_cancel_only(context: ApprovalContext, ask: ApprovalAsk) -> bool:
    """A request closed as cancel only is rejected, so no approval of it is a transition; a cancel only asked again
    (a double click, the form sent again after going back) is a repeat when it asks nothing else, as an approval's
    is. Its amount means nothing: cancel only moves no money (the dashboard's form sends its amount field anyway)."""
    decided = context.decided
    if context.status is not RefundStatus.REJECTED or decided is None:
        return False
    if decided.subscription_action is not SubscriptionAction.CANCEL_ONLY:
        return False  # a rejection: no approval repeats it (the transition refuses it)
    if ask.subscription_action is not SubscriptionAction.CANCEL_ONLY:
        raise InvalidTransition(
            "this request was already closed as cancel only: an approval asking a refund is not recorded",
            current_status=context.status,
        )
    if other := _asked_otherwise(_notes_asked(ask, decided)):
        raise InvalidTransition(
            f"this request was already closed as cancel only: one asking another {', '.join(other)} is not recorded",
            current_status=context.status,
        )
    return True


def decide_approval(context: ApprovalContext, ask: ApprovalAsk, policy: RefundPolicy) -> ApprovalDecision:
    """Raises a DomainError when a hard rule says no (dispute, amount, transition)."""
    if ask.subscription_action is SubscriptionAction.REFUND_AND_CANCEL and ask.extend_days is not None:
        raise _cancel_conflict()  # the ask contradicts itself, whatever the refund's state (as the API documents)
    if _repeats_the_cancel_only(context, ask):
        return Unchanged()
    if context.status in APPROVED_STATUSES:  # a repeat, whatever the provider did since (a retry meets it refunded)
        _check_repeats_the_approval(context, ask)
        return Unchanged()
    check_transition(context.status, RefundStatus.PROCESSING)  # a rejected refund: refused
    if not context.is_subscription and (ask.subscription_action is not None or ask.extend_days is not None):
        raise NotASubscription("the payment is not for a subscription")
    action = ask.subscription_action or _default_action(context)
    if action is SubscriptionAction.REFUND_AND_CANCEL and ask.extend_days is not None:
        raise _cancel_conflict()
    if action is SubscriptionAction.CANCEL_ONLY:
        return CancelOnly(extend_days=ask.extend_days)  # moves no money, so a dispute does not stop it
    if context.disputed:
        raise PaymentIsDisputed("the payment is disputed: refunds are blocked")
    if context.provider_payment_conflict:
        raise ProviderPaymentConflict("another merchant registered this provider payment too: refunds are blocked")
    amount = context.requested if ask.amount is None else ask.amount
    if not 0 < amount <= context.requested:
        least, asked, approving = (format_amount(a, context.currency) for a in (1, context.requested, amount))
        raise ApprovalExceedsRequest(f"approve between {least} and the {asked} asked for, not {approving}")
    left = refundable_amount(context.payment_amount, context.held_by_others)
    if amount > left:
        raise RefundExceedsRefundable(refund_exceeds_refundable_message(amount, left, context.currency))
    check_provider_can_refund(amount, context.currency)  # a smaller amount, too

    # Approvals count only for what they approved: another amount, action or extension starts the approval over.
    approval = Approval(amount, action, ask.extend_days, ask.note_to_customer)
    discarded = tuple(actor for actor, earlier in context.approvals.items() if not earlier.agrees_with(approval))
    other_amount = any(context.approvals[actor].amount != amount for actor in discarded)
    # Approvals given before intake's migration 0850 hold no subscription choice: what they chose is unknown.
    choice_unrecorded = context.is_subscription and any(
        context.approvals[actor].subscription_action is None for actor in discarded
    )
    agreeing = [actor for actor in context.approvals if actor not in discarded]
    first_time = ask.actor not in agreeing
    approvers = len(agreeing) + first_time
    required = policy.approvals_required(amount, context.currency, refunded=context.refunded_by_others)
    if approvers >= required:
        if required > 1 and not ask.by_person:  # approvals count people: a key cannot be the second one
            raise SecondApprovalNeedsAPerson(
                f"this refund needs {required} approvers: the approval that completes it must come from a person"
                " signed in to the dashboard, not an API key"
            )
        told = [ask.note_to_customer, *(context.approvals[actor].note_to_customer for actor in reversed(agreeing))]
        return Approve(
            amount=amount,
            action=action,
            extend_days=ask.extend_days,
            discarded=discarded,
            other_amount=other_amount,
            choice_unrecorded=choice_unrecorded,
            note_to_customer=next((note for note in told if note is not None), None),
        )
    if not first_time and not discarded and context.approvals[ask.actor] == approval:
        return Unchanged()
    return AwaitAnotherApprover(
        approval=approval,
        step=f"approval_{approvers}_of_{required}",
        discarded=discarded,
        other_amount=other_amount,
        choice_unrecorded=choice_unrecorded,
    )
