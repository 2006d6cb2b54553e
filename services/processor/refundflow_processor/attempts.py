"""The life of a refund attempt (one idempotency key) as a pure state machine: no I/O, no clock, no dice.

``next_step(attempt, answer, now=..., policy=...)`` says what to do given what the provider said (``None``:
nothing asked yet in this turn). The executor, the webhook and the sync job interpret the step;
``tests/unit/test_attempt_steps.py`` is the table of every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from refundflow_processor.payment_provider import ProviderRefund, normalise_failure_reason
from refundflow_shared.backoff import exponential

if TYPE_CHECKING:
    from refundflow_processor.records import Attempt
    from refundflow_processor.settings import ProcessorSettings

PROVIDER_REFUSED = "provider_refused"
PROVIDER_UNAVAILABLE = "provider_unavailable"
PAYMENT_DISPUTED = "payment_disputed"


class AttemptState(StrEnum):
    SCHEDULED = "scheduled"  # due at next_try_at: call the provider with the key
    PROVIDER_PENDING = "provider_pending"  # the provider holds a pending refund; webhook or sync job finishes it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # reconciliation proved the key made no refund: attempt n + 1 has a new key
    # The provider may hold a refund and reconciliation could not run yet, or it answered with a refund that is not
    # ours: reconcile only.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AttemptPolicy:
    retry_budget: int
    server_errors_before_reconcile: int
    key_lifetime: timedelta
    retry_base_seconds: float
    retry_max_seconds: float
    # A provider's "not executed, try later" costs no budget: its Retry-After is kept up to this bound, and the team
    # is told once calls have been so answered this long.
    retry_after_max_seconds: float = 600.0
    not_executed_alert_after: timedelta = timedelta(hours=1)
    # A budget spent on calls without an answer (an outage) starts over with a new key until this long after the
    # approval; then the refund fails provider_unavailable.
    outage_give_up_after: timedelta = timedelta(hours=24)

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> AttemptPolicy:
        return cls(
            retry_budget=settings.provider_retry_budget,
            server_errors_before_reconcile=settings.provider_server_errors_before_reconcile,
            key_lifetime=timedelta(seconds=settings.provider_key_lifetime_seconds),
            retry_base_seconds=settings.provider_retry_base_seconds,
            retry_max_seconds=settings.provider_retry_max_seconds,
            retry_after_max_seconds=settings.provider_retry_after_max_seconds,
            not_executed_alert_after=timedelta(seconds=settings.provider_not_executed_alert_after_seconds),
            outage_give_up_after=timedelta(hours=settings.provider_outage_give_up_hours),
        )

    def backoff(self, tries: int) -> float:
        """The delay before turn ``tries + 1``: exponential, capped; the interpreter adds jitter."""
        return exponential(tries, base=self.retry_base_seconds, cap=self.retry_max_seconds)


# What the provider said (the input).
@dataclass(frozen=True)
class Answered:
    refund: ProviderRefund


@dataclass(frozen=True)
class Refused:
    code: str
    message: str


@dataclass(frozen=True)
class NoAnswer:
    error: str
    server_error: bool = False


@dataclass(frozen=True)
class NotExecuted:
    """The provider did not execute the call and asks for it later (rate limited, the key's request still
    running): nothing happened under the key."""

    error: str
    retry_after: float | None = None


@dataclass(frozen=True)
class AuthFailed:
    error: str


@dataclass(frozen=True)
class Reconciled:
    found: ProviderRefund | None


@dataclass(frozen=True)
class ReconcileFailed:
    error: str


@dataclass(frozen=True)
class RecordedForAnother:
    """The provider's refund for our key is already recorded as another refund's: the provider's answer is not
    the refund we asked for (its ids are unique, so no two of our refunds can be one refund)."""

    provider_refund_id: str
    other_refund_id: str


@dataclass(frozen=True)
class Updated:
    """The provider reported a refund's status on its own (webhook, or the sync job asking)."""

    refund: ProviderRefund


ProviderAnswer = (
    Answered
    | Refused
    | NoAnswer
    | NotExecuted
    | AuthFailed
    | Reconciled
    | ReconcileFailed
    | RecordedForAnother
    | Updated
)


# What to do (the output).
@dataclass(frozen=True)
class CallProvider:
    pass


@dataclass(frozen=True)
class Reconcile:
    why: str


@dataclass(frozen=True)
class Succeed:
    refund: ProviderRefund


@dataclass(frozen=True)
class AwaitProvider:
    refund: ProviderRefund


@dataclass(frozen=True)
class Fail:
    reason: str
    message: str
    provider_refund_id: str | None = None


@dataclass(frozen=True)
class GiveUp:
    """Out of budget past the outage window, and reconciliation proved no refund exists: fail (provider_unavailable)
    and alert."""

    error: str


@dataclass(frozen=True)
class RetryAt:
    delay_seconds: float
    error: str
    server_error: bool = False


@dataclass(frozen=True)
class CallLater:
    """The same key again, not before ``at_least_seconds`` (the provider's Retry-After), with no call counted;
    ``alert``: calls have been answered so for long (the team is told once)."""

    delay_seconds: float
    at_least_seconds: float
    error: str
    alert: bool = False


@dataclass(frozen=True)
class NewKey:
    delay_seconds: float
    error: str


@dataclass(frozen=True)
class StartOver:
    """Out of budget within the outage window, and reconciliation proved no refund exists: a new key, with the
    budget whole again."""

    delay_seconds: float
    error: str


@dataclass(frozen=True)
class Unknown:
    delay_seconds: float
    error: str
    alert: str = "refund_outcome_unknown"
    mismatched_refund_id: str | None = None  # the refund, not ours, that the provider answered the key with


@dataclass(frozen=True)
class PauseCalls:
    error: str


@dataclass(frozen=True)
class Reverse:
    refund: ProviderRefund


@dataclass(frozen=True)
class Ignore:
    why: str


Step = (
    CallProvider
    | Reconcile
    | Succeed
    | AwaitProvider
    | Fail
    | GiveUp
    | RetryAt
    | CallLater
    | NewKey
    | StartOver
    | Unknown
    | PauseCalls
    | Reverse
    | Ignore
)


def next_step(attempt: Attempt, answer: ProviderAnswer | None, *, now: datetime, policy: AttemptPolicy) -> Step:
    """What to do next with ``attempt``, given the provider's ``answer`` to the last question asked."""
    key_expired = now - attempt.key_created_at > policy.key_lifetime
    budget_spent = attempt.refund.provider_calls >= policy.retry_budget
    outage_window_open = now - attempt.approved_at < policy.outage_give_up_after
    backoff = policy.backoff(attempt.tries + 1)
    match answer:
        case None if attempt.state is AttemptState.UNKNOWN:
            return Reconcile("the outcome is unknown")
        case None if attempt.disputed:
            # Never a call: a key used before (a crash, a lost answer, a restore) may have made the refund.
            return Reconcile("the payment is disputed")
        case None if key_expired:
            return Reconcile("the idempotency key outlived its lifetime")
        case None if budget_spent:
            return Reconcile("the retry budget is spent")
        case None if attempt.server_errors >= policy.server_errors_before_reconcile:
            return Reconcile("the key replays a server error")
        case None:
            return CallProvider()
        case Answered(refund) | Reconciled(found=ProviderRefund() as refund):
            return _verdict(attempt, refund, backoff)
        case RecordedForAnother(provider_refund_id, other_refund_id):
            return _mismatch(
                backoff,
                provider_refund_id,
                f"the provider's refund {provider_refund_id} is already recorded for refund {other_refund_id}",
            )
        case Refused(code, message):
            return Fail(PROVIDER_REFUSED, f"{code}: {message}")
        case AuthFailed(error):
            return PauseCalls(error)
        case NoAnswer(error, server_error) if attempt.refund.provider_calls + 1 >= policy.retry_budget:
            # The call that spends the budget waits longest: a call the provider was still working on has landed
            # before the listing that follows may prove the key made no refund (and a new key be used).
            return RetryAt(policy.retry_max_seconds, error, server_error)
        case NoAnswer(error, server_error):
            return RetryAt(backoff, error, server_error)
        case NotExecuted(error, retry_after):
            since = attempt.not_executed_since
            return CallLater(
                backoff,
                min(retry_after or 0.0, policy.retry_after_max_seconds),
                error,
                alert=since is not None and now - since >= policy.not_executed_alert_after,
            )
        case Reconciled(found=None) if attempt.mismatched_refund_id is not None:
            # The key was answered with a refund: that none of ours is listed does not prove it made none.
            return _mismatch(
                backoff,
                attempt.mismatched_refund_id,
                f"key {attempt.idempotency_key} was answered with the provider's refund {attempt.mismatched_refund_id},"
                " not ours, and the provider lists none of ours",
            )
        case Reconciled(found=None) if attempt.disputed:
            return Fail(PAYMENT_DISPUTED, "the payment was disputed before the provider made the refund")
        case Reconciled(found=None) if budget_spent and outage_window_open:
            # Only calls without an answer spend the budget (a refusal fails at once): an outage, not a verdict.
            return StartOver(
                policy.backoff(1), f"key {attempt.idempotency_key} got no answer within the budget and made no refund"
            )
        case Reconciled(found=None) if budget_spent:
            return GiveUp(attempt.last_error or "no answer within the retry budget")
        case Reconciled(found=None):
            return NewKey(policy.backoff(1), f"key {attempt.idempotency_key} made no refund")
        case ReconcileFailed(error):
            return Unknown(backoff, f"reconciliation failed: {error}")
        case Updated(refund) if attempt.state is AttemptState.PROVIDER_PENDING and refund.status != "pending":
            return _verdict(attempt, refund, backoff)
        case Updated(refund) if (
            attempt.state is AttemptState.SUCCEEDED
            and attempt.refund.status == "succeeded"
            and refund.status == "failed"
        ):
            return Reverse(refund)
        case Updated(refund):
            return Ignore(f"nothing to do for a {refund.status} refund on a {attempt.state} attempt")
    raise AssertionError(f"unhandled answer {answer!r}")  # pragma: no cover - the match is exhaustive


def _verdict(attempt: Attempt, refund: ProviderRefund, backoff: float) -> Step:
    """The provider's refund for our key: believed only when it is the refund we asked for (of our payment and made
    for our refund, where the answer says which)."""
    ours = attempt.refund
    if (refund.amount, refund.currency) != (ours.amount, ours.currency):
        return _mismatch(
            backoff,
            refund.id,
            f"the provider's refund {refund.id} is {refund.amount} {refund.currency or '?'},"
            f" ours is {ours.amount} {ours.currency}",
        )
    if refund.of_payment(ours.provider_payment_id) is False:
        return _mismatch(
            backoff,
            refund.id,
            f"the provider's refund {refund.id} is of payment {refund.payment_ref or refund.charge},"
            f" ours of {ours.provider_payment_id}",
        )
    if refund.refund_id not in (None, ours.refund_id):
        error = f"the provider's refund {refund.id} was made for refund {refund.refund_id}"
        return _mismatch(backoff, refund.id, error)
    if refund.status == "failed":
        return Fail(normalise_failure_reason(refund.failure_reason), f"provider: {refund.failure_reason}", refund.id)
    if refund.status == "pending":
        return AwaitProvider(refund)
    return Succeed(refund)


def _mismatch(backoff: float, provider_refund_id: str, error: str) -> Unknown:
    """The provider answered our key with a refund that is not ours: the team is told, and only reconciliation
    follows, never a new key (the answer says the key may have made a refund)."""
    return Unknown(backoff, error, alert="provider_answer_mismatch", mismatched_refund_id=provider_refund_id)
