"""The approval decision and the external-refund ledger moves, as pure functions: no database, no broker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from refundflow_intake.approval_rules import (
    Approval,
    ApprovalAsk,
    ApprovalContext,
    Approve,
    AwaitAnotherApprover,
    CancelOnly,
    Decided,
    Unchanged,
    decide_approval,
)
from refundflow_intake.domain import (
    ApprovalExceedsRequest,
    ExtensionConflictsWithCancel,
    ExternalRefundChange,
    InvalidTransition,
    NotASubscription,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    RefundExceedsRefundable,
    RefundStatus,
    SecondApprovalNeedsAPerson,
    SubscriptionAction,
    external_refund_change,
)
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_shared.events import EXTERNAL_REFUND_MOVES
from refundflow_shared.money import Money

PENDING = ApprovalContext(
    status=RefundStatus.PENDING,
    requested=5_000,
    currency="EUR",
    payment_amount=10_000,
    held_by_others=0,
    refunded_by_others=0,
    disputed=False,
    provider_payment_conflict=False,
    is_subscription=False,
    approvals={},
)
ONE_APPROVER = RefundPolicy()
TWO_APPROVERS = RefundPolicy(second_approval_above=Money(amount=1_000, currency="EUR"))


def test_one_approval_is_enough_below_the_threshold() -> None:
    decision = decide_approval(PENDING, ApprovalAsk(actor="api_key:a"), ONE_APPROVER)
    assert decision == Approve(amount=5_000, action=None, extend_days=None, discarded=())


def test_above_the_threshold_the_first_approval_waits_for_a_second_approver() -> None:
    decision = decide_approval(PENDING, ApprovalAsk(actor="api_key:a"), TWO_APPROVERS)
    assert decision == AwaitAnotherApprover(approval=Approval(5_000), step="approval_1_of_2", discarded=())


def test_what_the_payments_other_refunds_sent_counts_toward_the_threshold() -> None:
    """1000 of the payment sent already: another 600 needs a second approver, as one refund of 1600 would."""
    context = replace(PENDING, requested=600, held_by_others=1_000, refunded_by_others=1_000)
    decision = decide_approval(context, ApprovalAsk(actor="api_key:a"), TWO_APPROVERS)
    assert decision == AwaitAnotherApprover(approval=Approval(600), step="approval_1_of_2", discarded=())
    asked_only = replace(context, refunded_by_others=0)  # the other refund is pending: nothing sent yet
    assert isinstance(decide_approval(asked_only, ApprovalAsk(actor="api_key:a"), TWO_APPROVERS), Approve)


def test_the_same_approver_again_for_the_same_amount_changes_nothing() -> None:
    context = replace(PENDING, approvals={"api_key:a": Approval(5_000)})
    assert decide_approval(context, ApprovalAsk(actor="api_key:a"), TWO_APPROVERS) == Unchanged()


def test_a_second_approver_of_the_same_amount_approves() -> None:
    context = replace(PENDING, approvals={"api_key:a": Approval(4_000)})
    decision = decide_approval(context, ApprovalAsk(actor="user:b", by_person=True, amount=4_000), TWO_APPROVERS)
    assert decision == Approve(amount=4_000, action=None, extend_days=None, discarded=())


def test_an_api_key_cannot_give_the_approval_that_completes_a_two_person_rule() -> None:
    by_person = replace(PENDING, approvals={"user:a": Approval(4_000)})
    with pytest.raises(SecondApprovalNeedsAPerson):
        decide_approval(by_person, ApprovalAsk(actor="api_key:b", amount=4_000), TWO_APPROVERS)
    first = decide_approval(PENDING, ApprovalAsk(actor="api_key:b", amount=4_000), TWO_APPROVERS)
    assert first == AwaitAnotherApprover(approval=Approval(4_000), step="approval_1_of_2", discarded=())
    alone = decide_approval(PENDING, ApprovalAsk(actor="api_key:b"), ONE_APPROVER)
    assert isinstance(alone, Approve)  # one approval: a key is enough, as before


def test_a_second_approver_of_another_amount_restarts_the_approval() -> None:
    context = replace(PENDING, approvals={"api_key:a": Approval(4_000)})
    decision = decide_approval(context, ApprovalAsk(actor="api_key:b"), TWO_APPROVERS)
    assert decision == AwaitAnotherApprover(
        approval=Approval(5_000), step="approval_1_of_2", discarded=("api_key:a",), other_amount=True
    )


def test_the_first_approver_changing_the_amount_restarts_with_themself() -> None:
    context = replace(PENDING, approvals={"api_key:a": Approval(4_000)})
    decision = decide_approval(context, ApprovalAsk(actor="api_key:a", amount=3_000), TWO_APPROVERS)
    assert decision == AwaitAnotherApprover(
        approval=Approval(3_000), step="approval_1_of_2", discarded=("api_key:a",), other_amount=True
    )


SUBSCRIPTION = replace(PENDING, is_subscription=True)
REFUND_ONLY = SubscriptionAction.REFUND_ONLY


def test_the_second_approver_of_the_same_choice_decides_what_the_first_chose() -> None:
    """The first approver's subscription action and extension are what both approved; a second who leaves the
    message out completes it with the first's."""
    first = ApprovalAsk(
        actor="user:a", by_person=True, subscription_action=REFUND_ONLY, extend_days=14, note_to_customer="On us."
    )
    waiting = decide_approval(SUBSCRIPTION, first, TWO_APPROVERS)
    assert waiting == AwaitAnotherApprover(
        approval=Approval(5_000, REFUND_ONLY, 14, "On us."), step="approval_1_of_2", discarded=()
    )
    context = replace(SUBSCRIPTION, approvals={"user:a": Approval(5_000, REFUND_ONLY, 14, "On us.")})
    second = ApprovalAsk(actor="user:b", by_person=True, subscription_action=REFUND_ONLY, extend_days=14)
    assert decide_approval(context, second, TWO_APPROVERS) == Approve(
        amount=5_000, action=REFUND_ONLY, extend_days=14, discarded=(), note_to_customer="On us."
    )
    says_otherwise = replace(second, note_to_customer="Sorry.")
    assert decide_approval(context, says_otherwise, TWO_APPROVERS) == Approve(
        amount=5_000, action=REFUND_ONLY, extend_days=14, discarded=(), note_to_customer="Sorry."
    )


@pytest.mark.parametrize(
    "ask",
    [
        ApprovalAsk(actor="user:b", by_person=True),  # the default: refund and cancel
        ApprovalAsk(actor="user:b", by_person=True, subscription_action=REFUND_ONLY),
        ApprovalAsk(actor="user:b", by_person=True, subscription_action=REFUND_ONLY, extend_days=7),
    ],
)
def test_another_subscription_choice_starts_the_approval_over_as_another_amount_does(ask: ApprovalAsk) -> None:
    context = replace(SUBSCRIPTION, approvals={"user:a": Approval(5_000, REFUND_ONLY, 14, "On us.")})
    decision = decide_approval(context, ask, TWO_APPROVERS)
    assert isinstance(decision, AwaitAnotherApprover)
    assert (decision.discarded, decision.other_amount, decision.step) == (("user:a",), False, "approval_1_of_2")
    assert decision.approval.subscription_action is (ask.subscription_action or SubscriptionAction.REFUND_AND_CANCEL)


def test_an_approval_from_before_subscription_choices_were_recorded_is_said_to_have_recorded_none() -> None:
    """Approvals given before intake's migration 0850 hold no subscription choice: on a subscription's refund they
    agree with none, and the approval starts over, said to be for that (not for a choice made otherwise)."""
    context = replace(SUBSCRIPTION, approvals={"user:a": Approval(5_000)})
    decision = decide_approval(context, ApprovalAsk(actor="user:b", by_person=True), TWO_APPROVERS)
    assert isinstance(decision, AwaitAnotherApprover)
    assert (decision.discarded, decision.other_amount, decision.choice_unrecorded) == (("user:a",), False, True)
    chose_otherwise = replace(SUBSCRIPTION, approvals={"user:a": Approval(5_000, REFUND_ONLY)})
    decision = decide_approval(chose_otherwise, ApprovalAsk(actor="user:b", by_person=True), TWO_APPROVERS)
    assert isinstance(decision, AwaitAnotherApprover) and not decision.choice_unrecorded


def test_a_disputed_payment_is_never_refunded_but_a_cancel_only_still_closes() -> None:
    disputed = replace(PENDING, disputed=True, is_subscription=True)
    with pytest.raises(PaymentIsDisputed):
        decide_approval(disputed, ApprovalAsk(actor="api_key:a"), ONE_APPROVER)
    cancel = ApprovalAsk(actor="api_key:a", subscription_action=SubscriptionAction.CANCEL_ONLY, extend_days=3)
    assert decide_approval(disputed, cancel, ONE_APPROVER) == CancelOnly(extend_days=3)


def test_a_provider_payment_in_doubt_is_never_refunded() -> None:
    with pytest.raises(ProviderPaymentConflict):
        decide_approval(replace(PENDING, provider_payment_conflict=True), ApprovalAsk(actor="a"), ONE_APPROVER)


def test_approval_fits_what_is_left_besides_this_refunds_own_hold() -> None:
    context = replace(PENDING, held_by_others=6_000)  # an external refund took 6000 of 10000 meanwhile
    with pytest.raises(RefundExceedsRefundable):
        decide_approval(context, ApprovalAsk(actor="a"), ONE_APPROVER)
    assert isinstance(decide_approval(context, ApprovalAsk(actor="a", amount=4_000), ONE_APPROVER), Approve)


@pytest.mark.parametrize("amount", [0, 5_001])
def test_approval_is_between_one_and_the_amount_asked(amount: int) -> None:
    with pytest.raises(ApprovalExceedsRequest):
        decide_approval(PENDING, ApprovalAsk(actor="a", amount=amount), ONE_APPROVER)


def test_subscription_choices_on_a_one_time_payment_are_refused() -> None:
    with pytest.raises(NotASubscription):
        decide_approval(PENDING, ApprovalAsk(actor="a", extend_days=7), ONE_APPROVER)


def test_a_subscription_refund_cancels_it_unless_told_otherwise() -> None:
    subscription = replace(PENDING, is_subscription=True)
    decision = decide_approval(subscription, ApprovalAsk(actor="a"), ONE_APPROVER)
    assert isinstance(decision, Approve) and decision.action is SubscriptionAction.REFUND_AND_CANCEL


def test_a_refund_of_a_subscription_that_has_ended_only_refunds_unless_told_otherwise() -> None:
    """Cancelled already (by an earlier request, or billing): cancelling again would only send the customer a second
    "your subscription is cancelled"."""
    ended = replace(PENDING, is_subscription=True, subscription_ended=True)
    decision = decide_approval(ended, ApprovalAsk(actor="a"), ONE_APPROVER)
    assert isinstance(decision, Approve) and decision.action is SubscriptionAction.REFUND_ONLY


@pytest.mark.parametrize(
    "status", [RefundStatus.PROCESSING, RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.REVERSED]
)
def test_approving_again_once_approved_changes_nothing_whatever_the_provider_did_since(status: RefundStatus) -> None:
    """A retry after a timeout meets the refund as the processor left it: processing, or already succeeded."""
    assert decide_approval(replace(PENDING, status=status), ApprovalAsk("a"), ONE_APPROVER) == Unchanged()
    with pytest.raises(InvalidTransition, match="another amount"):
        decide_approval(replace(PENDING, status=status), ApprovalAsk("a", amount=2_000), ONE_APPROVER)


def test_approving_a_rejected_refund_refuses() -> None:
    with pytest.raises(InvalidTransition):
        decide_approval(replace(PENDING, status=RefundStatus.REJECTED), ApprovalAsk("a"), ONE_APPROVER)


APPROVED = replace(
    PENDING,
    status=RefundStatus.PROCESSING,
    is_subscription=True,
    decided=Decided(SubscriptionAction.REFUND_ONLY, extend_days=7, note="checked", note_to_customer="On its way."),
)


@pytest.mark.parametrize(
    "ask",
    [
        ApprovalAsk("b"),
        ApprovalAsk("b", amount=5_000, subscription_action=SubscriptionAction.REFUND_ONLY, extend_days=7),
        ApprovalAsk("b", note="checked", note_to_customer="On its way."),
    ],
)
def test_an_approval_of_a_refund_approved_that_asks_nothing_else_is_a_repeat(ask: ApprovalAsk) -> None:
    assert decide_approval(APPROVED, ask, ONE_APPROVER) == Unchanged()


@pytest.mark.parametrize(
    ("ask", "what"),
    [
        (ApprovalAsk("b", amount=2_000), "amount"),
        (ApprovalAsk("b", subscription_action=SubscriptionAction.CANCEL_ONLY), "subscription action"),
        (ApprovalAsk("b", extend_days=3), "extension"),
        (ApprovalAsk("b", note="looked again"), "note"),
        (ApprovalAsk("b", note_to_customer="Half of it."), "note to the customer"),
    ],
)
def test_an_approval_of_a_refund_approved_that_asks_something_else_is_refused_not_dropped(
    ask: ApprovalAsk, what: str
) -> None:
    with pytest.raises(InvalidTransition, match=f"already approved, for 5000 EUR.*another {what} is not recorded"):
        decide_approval(APPROVED, ask, ONE_APPROVER)


CLOSED_AS_CANCEL_ONLY = replace(
    PENDING,
    status=RefundStatus.REJECTED,
    is_subscription=True,
    decided=Decided(SubscriptionAction.CANCEL_ONLY, extend_days=7, note="loyal", note_to_customer="Access ends."),
)


@pytest.mark.parametrize(
    "ask",
    [
        ApprovalAsk("b", subscription_action=SubscriptionAction.CANCEL_ONLY),
        ApprovalAsk(
            "b",
            subscription_action=SubscriptionAction.CANCEL_ONLY,
            extend_days=7,
            note="loyal",
            note_to_customer="Access ends.",
        ),
        # The dashboard's form sends its amount field with every choice: cancel only moves no money, it means nothing.
        ApprovalAsk("b", amount=2_000, subscription_action=SubscriptionAction.CANCEL_ONLY),
    ],
)
def test_a_cancel_only_asked_again_of_a_request_closed_as_cancel_only_is_a_repeat(ask: ApprovalAsk) -> None:
    """A double click, or the form sent again after going back: closed as rejected, it was refused as a transition."""
    assert decide_approval(CLOSED_AS_CANCEL_ONLY, ask, ONE_APPROVER) == Unchanged()


@pytest.mark.parametrize(
    ("ask", "what"),
    [
        (ApprovalAsk("b"), "a refund"),  # the default would refund: not what was decided
        (ApprovalAsk("b", subscription_action=SubscriptionAction.REFUND_ONLY), "a refund"),
        (ApprovalAsk("b", subscription_action=SubscriptionAction.CANCEL_ONLY, extend_days=3), "extension"),
        (ApprovalAsk("b", subscription_action=SubscriptionAction.CANCEL_ONLY, note="other"), "note"),
        (ApprovalAsk("b", subscription_action=SubscriptionAction.CANCEL_ONLY, note_to_customer="Hi"), "customer"),
    ],
)
def test_another_ask_of_a_request_closed_as_cancel_only_is_refused(ask: ApprovalAsk, what: str) -> None:
    with pytest.raises(InvalidTransition, match=f"already closed as cancel only: .*{what}"):
        decide_approval(CLOSED_AS_CANCEL_ONLY, ask, ONE_APPROVER)


@pytest.mark.parametrize("status", [RefundStatus.PENDING, RefundStatus.PROCESSING, RefundStatus.REJECTED])
def test_an_extension_with_refund_and_cancel_is_refused_whatever_the_refunds_state(status: RefundStatus) -> None:
    # The OpenAPI document says so of the body alone (Approval's anyOf): an approval already given does not hide it.
    ask = ApprovalAsk("a", subscription_action=SubscriptionAction.REFUND_AND_CANCEL, extend_days=7)
    with pytest.raises(ExtensionConflictsWithCancel):
        decide_approval(replace(PENDING, status=status), ask, ONE_APPROVER)


NONE = ExternalRefundChange(hold=False, release=False, debit=False, credit_back=False)


@pytest.mark.parametrize(
    ("before", "reported", "change"),
    [
        (None, "pending", replace(NONE, hold=True)),
        (None, "succeeded", replace(NONE, debit=True)),
        (None, "failed", NONE),
        ("pending", "succeeded", replace(NONE, release=True, debit=True)),
        ("pending", "failed", replace(NONE, release=True)),
        ("succeeded", "failed", replace(NONE, credit_back=True)),
    ],
)
def test_each_external_refund_transition_moves_the_ledger_once(
    before: str | None, reported: str, change: ExternalRefundChange
) -> None:
    assert external_refund_change(before, reported) == change


@pytest.mark.parametrize(
    ("before", "reported"),
    [("pending", "pending"), ("succeeded", "succeeded"), ("succeeded", "pending"), ("failed", "succeeded"),
     ("failed", "pending"), ("failed", "failed")],
)  # fmt: skip
def test_repeats_and_backward_reports_move_nothing(before: str, reported: str) -> None:
    assert external_refund_change(before, reported) is None


def test_intake_and_the_processor_follow_an_external_refund_through_the_same_moves() -> None:
    statuses = ("pending", "succeeded", "failed")
    moves_in_intake = {(a, b) for a in statuses for b in statuses if external_refund_change(a, b) is not None}
    assert moves_in_intake == EXTERNAL_REFUND_MOVES
