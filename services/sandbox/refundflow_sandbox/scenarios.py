"""Which behaviour a payment intent id asks for, like Stripe's magic test card numbers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

FAILURE_REASONS: frozenset[str] = frozenset(
    {
        "lost_or_stolen_card",
        "expired_or_canceled_card",
        "charge_for_pending_refund_disputed",
        "insufficient_funds",
        "declined",
        "merchant_request",
        "unknown",
    }
)


class Behaviour(StrEnum):
    SUCCEED = "succeed"
    FAIL = "fail"
    PENDING = "pending"
    FLAKY = "flaky"
    TIMEOUT = "timeout"
    ERROR500_AFTER_CREATE = "error500_after_create"
    LATE_FAILURE = "late_failure"
    MISSING = "missing"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Scenario:
    behaviour: Behaviour
    failure_reason: str | None = None


_SUCCEED = Scenario(Behaviour.SUCCEED)

# Checked in order; the longer error500 prefix cannot be confused with the others.
_PREFIXES: tuple[tuple[str, Behaviour], ...] = (
    ("pi_pending_", Behaviour.PENDING),
    ("pi_flaky_", Behaviour.FLAKY),
    ("pi_timeout_", Behaviour.TIMEOUT),
    ("pi_error500_after_create_", Behaviour.ERROR500_AFTER_CREATE),
    ("pi_late_failure_", Behaviour.LATE_FAILURE),
    ("pi_missing_", Behaviour.MISSING),
    ("pi_rate_limited_", Behaviour.RATE_LIMITED),
)


def scenario_for(payment_intent: str) -> Scenario:
    """The behaviour chosen by the payment intent id; anything unrecognised succeeds at once.

    ``pi_fail_<reason>_...`` fails with ``<reason>``, which must be one of FAILURE_REASONS
    (reasons contain underscores, so the longest matching reason wins); an unrecognised reason
    fails with ``unknown`` rather than silently succeeding.
    """
    if payment_intent.startswith("pi_fail_"):
        rest = payment_intent.removeprefix("pi_fail_")
        matches = [r for r in FAILURE_REASONS if rest == r or rest.startswith(f"{r}_")]
        if matches:
            return Scenario(Behaviour.FAIL, failure_reason=max(matches, key=len))
        return Scenario(Behaviour.FAIL, failure_reason="unknown")
    for prefix, behaviour in _PREFIXES:
        if payment_intent.startswith(prefix):
            return Scenario(behaviour)
    return _SUCCEED


def subscription_behaviour(subscription_id: str) -> Behaviour:
    """``sub_missing_...`` does not exist (404), ``sub_flaky_...`` answers 500 at first; others behave."""
    if subscription_id.startswith("sub_missing_"):
        return Behaviour.MISSING
    if subscription_id.startswith("sub_flaky_"):
        return Behaviour.FLAKY
    return Behaviour.SUCCEED
