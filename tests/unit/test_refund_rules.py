from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refundflow_intake.domain import (
    CurrencyMismatch,
    InvalidAmount,
    InvalidTransition,
    RefundExceedsRefundable,
    RefundRequest,
    RefundStatus,
    check_transition,
    payment_status,
)
from refundflow_intake.refund_commands import asked_at
from refundflow_shared.events import CLOCK_SKEW

S = RefundStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.REJECTED),
        (S.PROCESSING, S.SUCCEEDED),
        (S.PROCESSING, S.FAILED),
        (S.SUCCEEDED, S.REVERSED),
    ],
)
def test_the_allowed_transitions_apply(current: RefundStatus, target: RefundStatus) -> None:
    assert check_transition(current, target) is True


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.SUCCEEDED),
        (S.REJECTED, S.PROCESSING),
        (S.SUCCEEDED, S.FAILED),
        (S.FAILED, S.PROCESSING),
        (S.PROCESSING, S.REJECTED),
        (S.PROCESSING, S.REVERSED),
        (S.REVERSED, S.SUCCEEDED),
        (S.FAILED, S.REVERSED),
    ],
)
def test_every_other_transition_is_refused(current: RefundStatus, target: RefundStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, target)


def test_repeating_a_decision_is_a_no_op() -> None:
    assert check_transition(S.PROCESSING, S.PROCESSING) is False


def test_no_amount_means_everything_still_refundable() -> None:
    assert (
        RefundRequest(payment_amount=10_000, payment_currency="EUR", held_by_refunds=2_500).decide_amount(None, None)
        == 7_500
    )


def test_a_refund_must_fit_in_what_is_left() -> None:
    with pytest.raises(RefundExceedsRefundable):
        RefundRequest(payment_amount=10_000, payment_currency="EUR", held_by_refunds=2_500).decide_amount(7_501, None)


def test_a_refund_of_nothing_is_no_amount_rather_than_too_much() -> None:
    with pytest.raises(InvalidAmount, match="at least 1"):
        RefundRequest(payment_amount=10_000, payment_currency="EUR", held_by_refunds=0).decide_amount(0, None)


def test_nothing_left_means_no_refund_at_all() -> None:
    with pytest.raises(RefundExceedsRefundable):
        RefundRequest(payment_amount=100, payment_currency="EUR", held_by_refunds=100).decide_amount(None, None)


def test_the_currency_must_be_the_payments() -> None:
    with pytest.raises(CurrencyMismatch):
        RefundRequest(payment_amount=100, payment_currency="JPY", held_by_refunds=0).decide_amount(50, "usd")


@pytest.mark.parametrize(("refunded", "status"), [(0, "paid"), (1, "partially_refunded"), (100, "refunded")])
def test_payment_status_follows_what_was_refunded(refunded: int, status: str) -> None:
    assert payment_status(100, refunded) == status


RECEIVED = datetime(2026, 11, 30, 12, tzinfo=UTC)
WAIT = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("sent", "judged"),
    [
        (RECEIVED - timedelta(minutes=1), RECEIVED - timedelta(minutes=1)),  # waited for its payment: as sent
        (RECEIVED + timedelta(hours=1), RECEIVED),  # dated ahead: never judged after it came
        (RECEIVED - timedelta(days=3), RECEIVED - WAIT - CLOCK_SKEW),  # a replay, or backdated: minutes at most
    ],
)
def test_a_command_is_judged_when_it_was_sent_within_what_intake_may_have_kept_it(
    sent: datetime, judged: datetime
) -> None:
    assert asked_at(sent, RECEIVED, awaited_wait=WAIT) == judged
