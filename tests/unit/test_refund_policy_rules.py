from __future__ import annotations

from datetime import UTC, datetime, timedelta

from refundflow_intake.dashboard.refund_words import flag_explanations
from refundflow_intake.domain import RefundReason
from refundflow_intake.refund_policy import FLAG_OUTSIDE_WINDOW, RefundPolicy, RefundPolicyOverride
from refundflow_intake.request_terms import RequestTerms
from refundflow_shared.money import Money

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
R = RefundReason


def test_the_window_is_counted_from_the_payment() -> None:
    policy = RefundPolicy(refund_window_days=14)
    inside = policy.flags(paid_at=NOW - timedelta(days=14), now=NOW, category=None, reason=R.DUPLICATE)
    outside = policy.flags(paid_at=NOW - timedelta(days=14, seconds=1), now=NOW, category=None, reason=R.DUPLICATE)
    assert (inside, outside) == ([], ["outside_refund_window"])


def test_auto_approval_needs_the_amount_the_reason_and_no_flags() -> None:
    policy = RefundPolicy(auto_approve={"max_amount": Money(amount=2_000, currency="EUR"), "reasons": [R.DUPLICATE]})

    def approves(
        amount: int, *, refunded: int = 0, currency: str = "EUR", flags: tuple[str, ...] = (), reason: R = R.DUPLICATE
    ) -> bool:
        return policy.auto_approves(
            amount=amount, refunded=refunded, currency=currency, flags=list(flags), reason=reason
        )

    assert approves(2_000)
    assert not approves(2_001)
    assert not approves(100, reason=R.OTHER)
    assert not approves(100, flags=("excluded_category",))
    assert not approves(100, currency="USD")
    assert approves(500, refunded=1_500), "the payment's refunds come to the limit"
    assert not approves(501, refunded=1_500), "one minor unit past it: a person decides"


def test_a_second_approver_is_needed_above_the_amount_and_in_other_currencies() -> None:
    policy = RefundPolicy(second_approval_above=Money(amount=10_000, currency="EUR"))
    assert policy.approvals_required(10_000, "EUR", refunded=0) == 1
    assert policy.approvals_required(10_001, "EUR", refunded=0) == 2
    assert policy.approvals_required(1, "USD", refunded=0) == 2
    assert RefundPolicy().approvals_required(10**9, "EUR", refunded=10**9) == 1


def test_the_second_approval_threshold_counts_what_the_payments_other_refunds_sent() -> None:
    """Or one approver sends any sum in refunds each at the threshold."""
    policy = RefundPolicy(second_approval_above=Money(amount=10_000, currency="EUR"))
    assert policy.approvals_required(4_000, "EUR", refunded=6_000) == 1
    assert policy.approvals_required(4_001, "EUR", refunded=6_000) == 2
    assert policy.approvals_required(1, "EUR", refunded=10_000) == 2
    both = RefundPolicy(
        second_approval_above=Money(amount=1_000, currency="EUR"),
        auto_approve={"max_amount": Money(amount=2_000, currency="EUR"), "reasons": [R.DUPLICATE]},
    )
    assert not both.auto_approves(amount=600, refunded=600, currency="EUR", flags=[], reason=R.DUPLICATE)


def test_an_override_replaces_only_the_fields_it_sets_and_null_turns_a_rule_off() -> None:
    merchant = RefundPolicy(refund_window_days=7, second_approval_above=Money(amount=1, currency="EUR"))
    override = RefundPolicyOverride.model_validate({"refund_window_days": 30, "second_approval_above": None})
    effective = merchant.with_override(override.fields_set())
    assert (effective.refund_window_days, effective.second_approval_above) == (30, None)
    assert effective.excluded_categories == ["consumable", "customized"]


def test_the_dashboard_never_says_a_request_outside_the_window_came_within_it() -> None:
    """Five hours past a 14-day window is not "asked 14 days after the payment" (days counted down)."""
    policy = RefundPolicy(refund_window_days=14)
    paid_at = NOW - timedelta(days=30)

    def said(after: timedelta) -> str:
        terms = RequestTerms.of(policy, asked_at=paid_at + after)
        [(_, words)] = flag_explanations([FLAG_OUTSIDE_WINDOW], terms, paid_at=paid_at, category=None, reason="x")
        return words

    assert "asked more than 14 days after the payment" in said(timedelta(days=14, hours=5))
    assert "asked 20 days after the payment" in said(timedelta(days=20))
