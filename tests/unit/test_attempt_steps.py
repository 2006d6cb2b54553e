"""The attempt lifecycle, as one table: what the processor does next, given an attempt and the provider's answer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from refundflow_processor.attempts import (
    Answered,
    AttemptPolicy,
    AttemptState,
    AuthFailed,
    AwaitProvider,
    CallLater,
    CallProvider,
    Fail,
    GiveUp,
    Ignore,
    NewKey,
    NoAnswer,
    NotExecuted,
    PauseCalls,
    ProviderAnswer,
    Reconcile,
    Reconciled,
    ReconcileFailed,
    RecordedForAnother,
    Refused,
    RetryAt,
    Reverse,
    StartOver,
    Step,
    Succeed,
    Unknown,
    Updated,
    next_step,
)
from refundflow_processor.payment_provider import ProviderRefund, ProviderStatus
from refundflow_processor.records import Attempt, Refund, RefundStatus

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
POLICY = AttemptPolicy(
    retry_budget=8,
    server_errors_before_reconcile=2,
    key_lifetime=timedelta(hours=24),
    retry_base_seconds=1.0,
    retry_max_seconds=300.0,
)
REFUND = Refund("ref_1", "pay_1", "mer_1", "ada@example.com", 2_500, "EUR", "pi_1", 10_000)
ATTEMPT = Attempt(REFUND, 1, "refund_ref_1_1", AttemptState.SCHEDULED, 0, 0, NOW - timedelta(seconds=5), NOW)


def attempt(
    state: AttemptState = AttemptState.SCHEDULED,
    *,
    tries: int = 0,
    server_errors: int = 0,
    provider_calls: int = 0,
    key_age: timedelta = timedelta(seconds=5),
    approved_age: timedelta = timedelta(minutes=10),
    refund_status: RefundStatus = RefundStatus.PROCESSING,
    mismatched_refund_id: str | None = None,
    disputed: bool = False,
) -> Attempt:
    refund = replace(REFUND, provider_calls=provider_calls, status=refund_status)
    return replace(
        ATTEMPT,
        refund=refund,
        state=state,
        tries=tries,
        server_errors=server_errors,
        key_created_at=NOW - key_age,
        approved_at=NOW - approved_age,
        last_error="HTTP 503: down",
        mismatched_refund_id=mismatched_refund_id,
        disputed=disputed,
    )


def refund(
    status: str = "succeeded", amount: int = 2_500, currency: str = "EUR", reason: str | None = None
) -> ProviderRefund:
    answered: ProviderStatus = status  # type: ignore[assignment]
    return ProviderRefund("re_1", answered, amount, currency, reason, {"refund_id": "ref_1"}, payment_ref="pi_1")


PENDING, SUCCEEDED = AttemptState.PROVIDER_PENDING, AttemptState.SUCCEEDED
EXPIRED = timedelta(hours=25)
PAST_THE_OUTAGE_WINDOW = timedelta(hours=24, seconds=1)

TABLE = [
    # Before any question: call with the key, unless something says reconcile first.
    pytest.param(attempt(), None, CallProvider(), id="a due attempt calls the provider with its key"),
    pytest.param(
        attempt(key_age=EXPIRED),
        None,
        Reconcile("the idempotency key outlived its lifetime"),
        id="a key past its lifetime is reconciled before any call, even untried",
    ),
    pytest.param(
        attempt(tries=3, key_age=EXPIRED),
        None,
        Reconcile("the idempotency key outlived its lifetime"),
        id="a retried key past its lifetime is reconciled",
    ),
    pytest.param(
        attempt(AttemptState.UNKNOWN),
        None,
        Reconcile("the outcome is unknown"),
        id="an unknown outcome is only reconciled",
    ),
    pytest.param(
        attempt(provider_calls=8), None, Reconcile("the retry budget is spent"), id="a spent budget reconciles"
    ),
    pytest.param(
        attempt(server_errors=2),
        None,
        Reconcile("the key replays a server error"),
        id="N server errors in a row under one key reconcile",
    ),
    pytest.param(
        attempt(disputed=True),
        None,
        Reconcile("the payment is disputed"),
        id="a disputed payment's refund is never called, only looked up (its key may have been used before)",
    ),
    # The provider answered with a refund.
    pytest.param(attempt(), Answered(refund()), Succeed(refund()), id="a succeeded refund is recorded"),
    pytest.param(attempt(), Answered(refund("pending")), AwaitProvider(refund("pending")), id="a pending refund waits"),
    pytest.param(
        attempt(),
        Answered(refund("failed", reason="insufficient_funds")),
        Fail("insufficient_funds", "provider: insufficient_funds", "re_1"),
        id="a failed refund fails with Stripe's reason",
    ),
    pytest.param(
        attempt(),
        Answered(refund("failed", reason="card_melted")),
        Fail("unknown", "provider: card_melted", "re_1"),
        id="a failure reason Stripe does not define is unknown",
    ),
    pytest.param(
        attempt(),
        Answered(refund(amount=25_000)),
        Unknown(
            1.0,
            "the provider's refund re_1 is 25000 EUR, ours is 2500 EUR",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_1",
        ),
        id="a refund of another amount is not believed",
    ),
    pytest.param(
        attempt(),
        Answered(refund(currency="JPY")),
        Unknown(
            1.0,
            "the provider's refund re_1 is 2500 JPY, ours is 2500 EUR",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_1",
        ),
        id="a refund in another currency is not believed",
    ),
    pytest.param(
        attempt(),
        Answered(replace(refund(), payment_ref="pi_2")),
        Unknown(
            1.0,
            "the provider's refund re_1 is of payment pi_2, ours of pi_1",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_1",
        ),
        id="a refund of another payment is not believed",
    ),
    pytest.param(
        attempt(),
        Answered(replace(refund(), metadata={"refund_id": "ref_2"})),
        Unknown(
            1.0,
            "the provider's refund re_1 was made for refund ref_2",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_1",
        ),
        id="a refund made for another of our refunds is not believed",
    ),
    pytest.param(
        attempt(),
        Answered(replace(refund(), payment_ref=None, metadata={})),
        Succeed(replace(refund(), payment_ref=None, metadata={})),
        id="a refund that names neither its payment nor our refund is judged by its amount and currency",
    ),
    pytest.param(
        attempt(),
        RecordedForAnother("re_1", "ref_2"),
        Unknown(
            1.0,
            "the provider's refund re_1 is already recorded for refund ref_2",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_1",
        ),
        id="a refund already recorded for another of our refunds is not believed",
    ),
    # No refund in the answer.
    pytest.param(
        attempt(),
        Refused("charge_disputed", "disputed"),
        Fail("provider_refused", "charge_disputed: disputed"),
        id="a 4xx refusal fails the refund",
    ),
    pytest.param(attempt(), AuthFailed("HTTP 401"), PauseCalls("HTTP 401"), id="a refused API key pauses calls"),
    pytest.param(attempt(), NoAnswer("timeout"), RetryAt(1.0, "timeout"), id="no answer: the same key later"),
    pytest.param(
        attempt(tries=2, server_errors=1),
        NoAnswer("HTTP 500", server_error=True),
        RetryAt(4.0, "HTTP 500", server_error=True),
        id="a 5xx: the same key later, backing off",
    ),
    pytest.param(attempt(tries=20), NoAnswer("409"), RetryAt(300.0, "409"), id="the backoff is capped"),
    pytest.param(
        attempt(tries=6, provider_calls=7),
        NoAnswer("timeout"),
        RetryAt(300.0, "timeout"),
        id="the call that spends the budget waits longest before the listing (a late call lands first)",
    ),
    pytest.param(
        attempt(provider_calls=8),
        Refused("charge_disputed", "disputed"),
        Fail("provider_refused", "charge_disputed: disputed"),
        id="a refusal fails the refund, whatever the outage before it",
    ),
    pytest.param(
        attempt(provider_calls=7),
        NotExecuted("HTTP 429: rate_limit", retry_after=30.0),
        CallLater(1.0, 30.0, "HTTP 429: rate_limit"),
        id="not executed: the same key after its Retry-After, with the budget nearly spent",
    ),
    pytest.param(
        attempt(),
        NotExecuted("HTTP 429: rate_limit", retry_after=86_400.0),
        CallLater(1.0, 600.0, "HTTP 429: rate_limit"),
        id="not executed: a Retry-After is waited out up to its bound",
    ),
    pytest.param(
        replace(attempt(), not_executed_since=NOW - timedelta(hours=1)),
        NotExecuted("HTTP 409: idempotency_key_in_use"),
        CallLater(1.0, 0.0, "HTTP 409: idempotency_key_in_use", alert=True),
        id="not executed for an hour: still the same key later, and the team is told",
    ),
    # Reconciliation's verdict.
    pytest.param(attempt(), Reconciled(refund()), Succeed(refund()), id="reconciliation adopts our refund"),
    pytest.param(
        attempt(), Reconciled(refund("pending")), AwaitProvider(refund("pending")), id="reconciliation finds it pending"
    ),
    pytest.param(
        attempt(server_errors=2),
        Reconciled(None),
        NewKey(1.0, "key refund_ref_1_1 made no refund"),
        id="no refund under a key that replays 5xx: a new key",
    ),
    pytest.param(
        attempt(key_age=EXPIRED),
        Reconciled(None),
        NewKey(1.0, "key refund_ref_1_1 made no refund"),
        id="no refund under an expired key: a new key",
    ),
    pytest.param(
        attempt(provider_calls=8),
        Reconciled(None),
        StartOver(1.0, "key refund_ref_1_1 got no answer within the budget and made no refund"),
        id="no refund and no budget left within the outage window: a new key, the budget whole again",
    ),
    pytest.param(
        attempt(AttemptState.UNKNOWN, provider_calls=8, approved_age=timedelta(hours=23)),
        Reconciled(None),
        StartOver(1.0, "key refund_ref_1_1 got no answer within the budget and made no refund"),
        id="an outage that outlasted reconciliation, the provider back within the window: a new key",
    ),
    pytest.param(
        attempt(provider_calls=8, approved_age=PAST_THE_OUTAGE_WINDOW),
        Reconciled(None),
        GiveUp("HTTP 503: down"),
        id="no refund and no budget left past the outage window: the refund fails, provider unavailable",
    ),
    pytest.param(
        attempt(provider_calls=8, disputed=True),
        Reconciled(None),
        Fail("payment_disputed", "the payment was disputed before the provider made the refund"),
        id="a disputed payment's refund out of budget never starts over",
    ),
    pytest.param(
        attempt(AttemptState.UNKNOWN, provider_calls=8, key_age=EXPIRED, mismatched_refund_id="re_9"),
        Reconciled(None),
        Unknown(
            1.0,
            "key refund_ref_1_1 was answered with the provider's refund re_9, not ours, and the provider lists none"
            " of ours",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_9",
        ),
        id="no refund of ours under a key answered with one not ours: still unknown, never a new key nor failed",
    ),
    pytest.param(
        attempt(disputed=True),
        Reconciled(None),
        Fail("payment_disputed", "the payment was disputed before the provider made the refund"),
        id="a disputed payment's refund the provider does not hold fails, disputed",
    ),
    pytest.param(
        attempt(disputed=True),
        Reconciled(refund()),
        Succeed(refund()),
        id="a disputed payment's refund the provider made is adopted, never failed",
    ),
    pytest.param(
        attempt(AttemptState.UNKNOWN, disputed=True, mismatched_refund_id="re_9"),
        Reconciled(None),
        Unknown(
            1.0,
            "key refund_ref_1_1 was answered with the provider's refund re_9, not ours, and the provider lists none"
            " of ours",
            alert="provider_answer_mismatch",
            mismatched_refund_id="re_9",
        ),
        id="disputed, but a key answered with a refund not ours may still have made one: still unknown",
    ),
    pytest.param(
        attempt(provider_calls=8, tries=8),
        ReconcileFailed("timeout"),
        Unknown(256.0, "reconciliation failed: timeout"),
        id="reconciliation impossible: unknown, never failed",
    ),
    pytest.param(
        attempt(AttemptState.UNKNOWN),
        ReconcileFailed("timeout"),
        Unknown(1.0, "reconciliation failed: timeout"),
        id="still impossible: stays unknown",
    ),
    # What the provider reports on its own (webhook, sync job).
    pytest.param(attempt(PENDING), Updated(refund()), Succeed(refund()), id="a pending refund settles"),
    pytest.param(
        attempt(PENDING),
        Updated(refund("failed", reason="declined")),
        Fail("declined", "provider: declined", "re_1"),
        id="a pending refund fails",
    ),
    pytest.param(
        attempt(PENDING),
        Updated(refund("pending")),
        Ignore("nothing to do for a pending refund on a provider_pending attempt"),
        id="still pending",
    ),
    pytest.param(
        attempt(SUCCEEDED, refund_status=RefundStatus.SUCCEEDED),
        Updated(refund("failed", reason="expired_or_canceled_card")),
        Reverse(refund("failed", reason="expired_or_canceled_card")),
        id="a succeeded refund that fails afterwards is reversed",
    ),
    pytest.param(
        attempt(SUCCEEDED, refund_status=RefundStatus.REVERSED),
        Updated(refund("failed")),
        Ignore("nothing to do for a failed refund on a succeeded attempt"),
        id="a reversal reported twice is reversed once",
    ),
    pytest.param(
        attempt(SUCCEEDED, refund_status=RefundStatus.SUCCEEDED),
        Updated(refund()),
        Ignore("nothing to do for a succeeded refund on a succeeded attempt"),
        id="a repeated success changes nothing",
    ),
    pytest.param(
        attempt(),
        Updated(refund()),
        Ignore("nothing to do for a succeeded refund on a scheduled attempt"),
        id="a report for an attempt the executor holds is left to it",
    ),
]


@pytest.mark.parametrize(("facts", "answer", "expected"), TABLE)
def test_the_next_step_of_an_attempt(facts: Attempt, answer: ProviderAnswer | None, expected: Step) -> None:
    assert next_step(facts, answer, now=NOW, policy=POLICY) == expected
