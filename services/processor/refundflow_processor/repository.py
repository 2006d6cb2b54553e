"""Refunds and their attempts in PostgreSQL: every write is a named function; all take the caller's connection.

A write to a claimed attempt releases its lease; the executor only writes to an attempt it locked with
``lock_leased_attempt`` (its lease still valid), the webhook and the sync job only through
``lock_attempt_of_provider_refund``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import asyncpg

from refundflow_processor.attempts import AttemptState
from refundflow_processor.customer_erasure import address_kept, to_customer_kept
from refundflow_processor.records import Attempt, Refund, RefundStatus, idempotency_key
from refundflow_shared.tracing import current_traceparent

ATTEMPTS_CHANNEL = "processor_refund_attempts"  # notified by a trigger when an attempt is scheduled

_REFUND_COLUMNS = (
    "r.refund_id, r.payment_id, r.merchant_id, r.customer_email, r.amount, r.currency, r.provider_payment_id,"
    " r.payment_amount, r.status, r.provider_calls, r.to_customer"
)
_ATTEMPT_COLUMNS = (
    f"{_REFUND_COLUMNS}, a.attempt, a.idempotency_key, a.state, a.tries, a.server_errors,"
    " a.created_at AS key_created_at,"
    " (SELECT f.created_at FROM refund_attempts f WHERE f.refund_id = r.refund_id AND f.attempt = 1) AS approved_at,"
    " a.provider_refund_id AS attempt_provider_refund_id, a.lease_id, a.last_error,"
    " a.traceparent, a.mismatched_refund_id, a.not_executed_since,"
    # A dispute by the refund's merchant naming its payment by our id, the provider's or billing's own (as intake
    # matches them): one probe of the disputes' key with every id, cheap on each claim.
    " EXISTS (SELECT FROM payment_disputes d WHERE d.merchant_id = r.merchant_id"
    "  AND d.payment_id = ANY(ARRAY[r.payment_id, r.provider_payment_id]"
    "  || ARRAY(SELECT s.payment_id FROM payment_aliases s WHERE s.merchant_id = r.merchant_id"
    "  AND s.provider_payment_id = r.provider_payment_id))) AS disputed"
)
_RELEASE = "lease_id = NULL, locked_until = '-infinity', updated_at = now()"
# An outcome is written under its payment's lock: the payment's totals it reports count every outcome recorded
# before it. The payment is locked first (rows are locked in the order of FOR UPDATE OF), as everywhere in the
# processor, so a statement waiting for it holds none of its refund's rows.
_LOCK_ATTEMPT = (
    f"SELECT {_ATTEMPT_COLUMNS} FROM payments p JOIN refunds r ON r.payment_id = p.payment_id"
    " JOIN refund_attempts a ON a.refund_id = r.refund_id"
)
_LOCK_PAYMENT_FIRST = "FOR UPDATE OF p, a, r"
# The refund whose attempt already holds provider refund $3 (the ids are unique), unless it is attempt ($1, $2).
_HELD_BY_ANOTHER = (
    "SELECT refund_id FROM refund_attempts WHERE provider_refund_id = $3 AND (refund_id, attempt) <> ($1, $2)"
)


class ProviderRefundTaken(Exception):
    """The provider refund is already recorded as another refund's; nothing was written."""

    def __init__(self, provider_refund_id: str, other_refund_id: str) -> None:
        super().__init__(f"the provider's refund {provider_refund_id} is already recorded for {other_refund_id}")
        self.provider_refund_id, self.other_refund_id = provider_refund_id, other_refund_id


def _refund(row: asyncpg.Record) -> Refund:
    return Refund(
        refund_id=row["refund_id"],
        payment_id=row["payment_id"],
        merchant_id=row["merchant_id"],
        customer_email=row["customer_email"],
        amount=row["amount"],
        currency=row["currency"],
        provider_payment_id=row["provider_payment_id"],
        payment_amount=row["payment_amount"],
        status=RefundStatus(row["status"]),
        provider_calls=row["provider_calls"],
        to_customer=json.loads(row["to_customer"]),
    )


def _attempt(row: asyncpg.Record) -> Attempt:
    return Attempt(
        refund=_refund(row),
        number=row["attempt"],
        idempotency_key=row["idempotency_key"],
        state=AttemptState(row["state"]),
        tries=row["tries"],
        server_errors=row["server_errors"],
        key_created_at=row["key_created_at"],
        approved_at=row["approved_at"],
        provider_refund_id=row["attempt_provider_refund_id"],
        lease_id=row["lease_id"],
        last_error=row["last_error"],
        traceparent=row["traceparent"],
        mismatched_refund_id=row["mismatched_refund_id"],
        disputed=row["disputed"],
        not_executed_since=row["not_executed_since"],
    )


# An approval read after its payment's erasure is recorded without the customer (``customer_erasure``).
_INSERT_REFUND = (
    "INSERT INTO refunds (refund_id, payment_id, merchant_id, customer_email, amount, currency,"
    " provider_payment_id, payment_amount, status, failure_reason, failure_message, to_customer)"
    f" VALUES ($1, $2, $3, {address_kept('$4', '$2')}, $5, $6, $7, $8, $9, $10, $11,"
    f" {to_customer_kept('$12::jsonb', '$2')}) ON CONFLICT (refund_id) DO NOTHING"
)


def _refund_values(refund: Refund, failure_reason: str | None, failure_message: str | None) -> tuple[object, ...]:
    return (
        refund.refund_id,
        refund.payment_id,
        refund.merchant_id,
        refund.customer_email,
        refund.amount,
        refund.currency,
        refund.provider_payment_id,
        refund.payment_amount,
        refund.status.value,
        failure_reason,
        failure_message,
        json.dumps(refund.to_customer),
    )


async def insert_refund(
    conn: asyncpg.Connection, refund: Refund, *, failure_reason: str | None = None, failure_message: str | None = None
) -> Refund | None:
    """Record a refund we were asked to execute, and return it as recorded (without its customer, if the payment
    was erased); None if it was already known (a redelivered approval)."""
    row = await conn.fetchrow(
        f"{_INSERT_REFUND} RETURNING customer_email, to_customer::text",
        *_refund_values(refund, failure_reason, failure_message),
    )
    if row is None:
        return None
    return replace(refund, customer_email=row["customer_email"], to_customer=json.loads(row["to_customer"]))


async def insert_refund_and_first_attempt(conn: asyncpg.Connection, refund: Refund, approved_at: datetime) -> bool:
    """``insert_refund`` and ``schedule_attempt`` of attempt 1, in one statement: the attempt only with a new
    refund. False if the refund was already known (a redelivered approval).

    Attempt 1's key is dated from the approval (never later than now): an approval read again after a database
    restore lost its refund may have been called with this key long ago, and a key older than the provider's
    lifetime is reconciled before any call (a forgotten key would refund the customer again)."""
    status = await conn.execute(
        f"WITH accepted AS ({_INSERT_REFUND} RETURNING refund_id)"
        " INSERT INTO refund_attempts"
        " (refund_id, attempt, idempotency_key, state, next_try_at, traceparent, created_at)"
        " SELECT refund_id, 1, $13, 'scheduled', now(), $14, least($15::timestamptz, now()) FROM accepted",
        *_refund_values(refund, None, None),
        idempotency_key(refund.refund_id, 1),
        current_traceparent(),
        approved_at,
    )
    return bool(status == "INSERT 0 1")


async def schedule_attempt(conn: asyncpg.Connection, refund_id: str, number: int, delay_seconds: float = 0) -> None:
    """Commit attempt ``number`` and its key: from here on, a crash is recovered by calling with this key. The
    attempt continues the current trace.

    The key is dated from when it falls due: it cannot be sent before, so its lifetime at the provider cannot
    start earlier (dated from now, a backoff longer than the lifetime would expire every new key unused)."""
    await conn.execute(
        "INSERT INTO refund_attempts (refund_id, attempt, idempotency_key, state, next_try_at, traceparent, created_at)"
        " SELECT $1, $2, $3, 'scheduled', due, $5, due FROM (SELECT now() + make_interval(secs => $4) AS due) AS d",
        refund_id,
        number,
        idempotency_key(refund_id, number),
        delay_seconds,
        current_traceparent(),
    )


async def claim_due_attempts(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, busy: list[str]
) -> list[Attempt]:
    """Lease up to ``limit`` due attempts (scheduled, or unknown and due for reconciliation), none of the refunds
    in ``busy`` (still worked on here, even if their lease ran out).

    SKIP LOCKED and the lease let several executors share the work; an attempt whose lease ran out (its
    executor died) is due again, and its stored key makes the repeated call safe.
    """
    rows = await conn.fetch(
        "UPDATE refund_attempts a SET locked_until = now() + make_interval(secs => $2), lease_id = gen_random_uuid()"
        " FROM (SELECT refund_id, attempt FROM refund_attempts"
        "       WHERE state IN ('scheduled', 'unknown') AND next_try_at <= now() AND locked_until < now()"
        "         AND refund_id <> ALL($3::text[])"
        "       ORDER BY next_try_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, refunds r"
        " WHERE a.refund_id = due.refund_id AND a.attempt = due.attempt AND r.refund_id = a.refund_id"
        f" RETURNING {_ATTEMPT_COLUMNS}",
        limit,
        lease_seconds,
        busy,
    )
    return [_attempt(row) for row in rows]


async def lock_leased_attempt(conn: asyncpg.Connection, attempt: Attempt) -> Attempt | None:
    """The attempt, locked with its refund and payment, if our lease on it still holds; None if another executor
    took it over."""
    row = await conn.fetchrow(
        f"{_LOCK_ATTEMPT} WHERE a.refund_id = $1 AND a.attempt = $2 AND a.lease_id = $3 {_LOCK_PAYMENT_FIRST}",
        attempt.refund.refund_id,
        attempt.number,
        attempt.lease_id,
    )
    return _attempt(row) if row else None


async def lock_attempt_of_provider_refund(conn: asyncpg.Connection, provider_refund_id: str) -> Attempt | None:
    """The attempt that made this provider refund, locked with its refund and payment; None if it is not ours."""
    row = await conn.fetchrow(
        f"{_LOCK_ATTEMPT} WHERE a.provider_refund_id = $1 {_LOCK_PAYMENT_FIRST}",
        provider_refund_id,
    )
    return _attempt(row) if row else None


async def refund_in_flight(conn: asyncpg.Connection, refund_id: str, provider_refund_id: str) -> bool:
    """True if our refund ``refund_id`` is still being executed (an attempt scheduled or unknown: the provider may
    hold a refund it has not recorded yet), or has recorded ``provider_refund_id`` since the caller looked."""
    in_flight: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM refund_attempts WHERE refund_id = $1"
        " AND (state IN ('scheduled', 'unknown') OR provider_refund_id = $2))",
        refund_id,
        provider_refund_id,
    )
    return in_flight


async def record_no_answer(
    conn: asyncpg.Connection, attempt: Attempt, delay_seconds: float, error: str, *, server_error: bool
) -> None:
    """A call without a definite answer: it counts against the budget; the same key again later. It ends any run of
    deferrals (``record_not_executed``): a later one is deferred since then, not since the first."""
    await conn.execute(
        "UPDATE refund_attempts SET tries = tries + 1, next_try_at = now() + make_interval(secs => $3),"
        " last_error = $4, server_errors = CASE WHEN $5 THEN server_errors + 1 ELSE 0 END,"
        " not_executed_since = NULL, "
        f"{_RELEASE} WHERE refund_id = $1 AND attempt = $2",
        attempt.refund.refund_id,
        attempt.number,
        delay_seconds,
        error,
        server_error,
    )
    await conn.execute(
        "UPDATE refunds SET provider_calls = provider_calls + 1 WHERE refund_id = $1", attempt.refund.refund_id
    )


async def restore_retry_budget(conn: asyncpg.Connection, refund_id: str) -> None:
    """The refund's calls start over with a new key (an outage, waited out): the budget is whole again."""
    await conn.execute("UPDATE refunds SET provider_calls = 0 WHERE refund_id = $1", refund_id)


async def record_not_executed(conn: asyncpg.Connection, attempt: Attempt, delay_seconds: float, error: str) -> None:
    """The provider did not execute the call (rate limited): no call is counted against the budget; the same key
    again later."""
    await conn.execute(
        "UPDATE refund_attempts SET tries = tries + 1, next_try_at = now() + make_interval(secs => $3),"
        f" last_error = $4, not_executed_since = coalesce(not_executed_since, now()), {_RELEASE}"
        " WHERE refund_id = $1 AND attempt = $2",
        attempt.refund.refund_id,
        attempt.number,
        delay_seconds,
        error,
    )


async def note_not_executed_alert(conn: asyncpg.Connection, refund_id: str) -> bool:
    """True the first time for a refund: the team hears once that the provider keeps deferring its calls."""
    status = await conn.execute(
        "UPDATE refunds SET not_executed_alerted_at = now() WHERE refund_id = $1 AND not_executed_alerted_at IS NULL",
        refund_id,
    )
    return bool(status == "UPDATE 1")


async def record_unknown(
    conn: asyncpg.Connection,
    attempt: Attempt,
    delay_seconds: float,
    error: str,
    *,
    mismatched_refund_id: str | None = None,
) -> None:
    """The provider may hold a refund and we could not look, or it answered with a refund that is not ours:
    reconcile again later, never call. It ends any run of deferrals, as ``record_no_answer`` does."""
    await conn.execute(
        "UPDATE refund_attempts SET state = 'unknown', tries = tries + 1, last_error = $4, not_executed_since = NULL,"
        " mismatched_refund_id = coalesce($5, mismatched_refund_id),"
        f" next_try_at = now() + make_interval(secs => $3), {_RELEASE} WHERE refund_id = $1 AND attempt = $2",
        attempt.refund.refund_id,
        attempt.number,
        delay_seconds,
        error,
        mismatched_refund_id,
    )


async def record_paused(conn: asyncpg.Connection, attempt: Attempt, delay_seconds: float, error: str) -> None:
    """Calls are paused (a configuration fault): nothing was learnt, nothing is counted; due after the pause."""
    await conn.execute(
        f"UPDATE refund_attempts SET next_try_at = now() + make_interval(secs => $3), last_error = $4, {_RELEASE}"
        " WHERE refund_id = $1 AND attempt = $2",
        attempt.refund.refund_id,
        attempt.number,
        delay_seconds,
        error,
    )


async def release_attempt(conn: asyncpg.Connection, attempt: Attempt, delay_seconds: float, error: str) -> None:
    """Give the attempt back after an internal error: the same key later (whatever happened is replayed)."""
    await record_paused(conn, attempt, delay_seconds, error)


async def record_attempt_state(
    conn: asyncpg.Connection,
    attempt: Attempt,
    state: AttemptState,
    *,
    provider_refund_id: str | None = None,
    error: str | None = None,
) -> None:
    """The attempt reached ``state`` (pending at the provider, succeeded, failed or abandoned). Raises
    ``ProviderRefundTaken``, writing nothing, if ``provider_refund_id`` is another refund's."""
    other_refund_id = await conn.fetchval(
        f"WITH other AS ({_HELD_BY_ANOTHER}), attempt AS ("
        "  UPDATE refund_attempts SET state = $4, provider_refund_id = coalesce($3, provider_refund_id),"
        f" last_error = coalesce($5, last_error), tries = tries + 1, {_RELEASE}"
        "  WHERE refund_id = $1 AND attempt = $2 AND NOT EXISTS (SELECT FROM other)"
        ") SELECT refund_id FROM other",
        attempt.refund.refund_id,
        attempt.number,
        provider_refund_id,
        state.value,
        error,
    )
    if other_refund_id is not None:
        assert provider_refund_id is not None  # only an id can be another's
        raise ProviderRefundTaken(provider_refund_id, other_refund_id)


async def finish_refund(
    conn: asyncpg.Connection,
    refund_id: str,
    status: RefundStatus,
    *,
    provider_refund_id: str | None,
    failure_reason: str | None = None,
    failure_message: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE refunds SET status = $2, provider_refund_id = $3, failure_reason = $4, failure_message = $5,"
        " updated_at = now() WHERE refund_id = $1",
        refund_id,
        status.value,
        provider_refund_id,
        failure_reason,
        failure_message,
    )


async def reverse_refund(conn: asyncpg.Connection, refund_id: str, reason: str, message: str) -> bool:
    """A succeeded refund failed at the provider afterwards; True the first time only."""
    status = await conn.execute(
        "UPDATE refunds SET status = 'reversed', failure_reason = $2, failure_message = $3, updated_at = now()"
        " WHERE refund_id = $1 AND status = 'succeeded'",
        refund_id,
        reason,
        message,
    )
    return bool(status == "UPDATE 1")


async def note_outcome_unknown_alert(conn: asyncpg.Connection, refund_id: str) -> bool:
    """True the first time for a refund: the team hears once that its outcome is unknown."""
    status = await conn.execute(
        "UPDATE refunds SET outcome_unknown_alerted_at = now() WHERE refund_id = $1"
        " AND outcome_unknown_alerted_at IS NULL",
        refund_id,
    )
    return bool(status == "UPDATE 1")


async def record_success(conn: asyncpg.Connection, attempt: Attempt, provider_refund_id: str) -> int:
    """The attempt and its refund succeeded (one round trip); what has now reached the customer: our succeeded
    refunds, this one included, plus attributed succeeded refunds made elsewhere. The caller holds the payment's
    lock, so the sums see every other outcome of the payment (this statement's snapshot is taken after it).
    Raises ``ProviderRefundTaken``, writing nothing, if ``provider_refund_id`` is another refund's."""
    row = await conn.fetchrow(
        f"WITH other AS ({_HELD_BY_ANOTHER}), attempt AS ("
        "  UPDATE refund_attempts SET state = 'succeeded', provider_refund_id = $3, tries = tries + 1,"
        f" {_RELEASE} WHERE refund_id = $1 AND attempt = $2 AND NOT EXISTS (SELECT FROM other)"
        "), refund AS ("
        "  UPDATE refunds SET status = 'succeeded', provider_refund_id = $3, failure_reason = NULL,"
        "  failure_message = NULL, updated_at = now() WHERE refund_id = $1 AND NOT EXISTS (SELECT FROM other)"
        "  RETURNING payment_id, amount"
        ")"  # the sums read the table as it was before this statement: this refund is counted from its update
        " SELECT (SELECT refund_id FROM other) AS other_refund_id, (SELECT refund.amount"
        "  + (SELECT coalesce(sum(amount), 0) FROM refunds"
        "     WHERE payment_id = refund.payment_id AND status = 'succeeded' AND refund_id <> $1)"
        "  + (SELECT coalesce(sum(amount), 0) FROM external_refunds"
        "     WHERE payment_id = refund.payment_id AND status = 'succeeded' AND attributed)"
        "  FROM refund) AS refunded",
        attempt.refund.refund_id,
        attempt.number,
        provider_refund_id,
    )
    if row["other_refund_id"] is not None:
        raise ProviderRefundTaken(provider_refund_id, row["other_refund_id"])
    return int(row["refunded"])


async def held_total(conn: asyncpg.Connection, payment_id: str) -> int:
    """What the payment's refunds use up or may still use up: ours in flight or succeeded, external ones
    pending or succeeded. The cap on a new refund."""
    total: int = await conn.fetchval(
        "SELECT (SELECT coalesce(sum(amount), 0) FROM refunds"
        "        WHERE payment_id = $1 AND status IN ('processing', 'succeeded'))"
        " + (SELECT coalesce(sum(amount), 0) FROM external_refunds"
        "    WHERE payment_id = $1 AND status IN ('pending', 'succeeded') AND attributed)",
        payment_id,
    )
    return int(total)


async def refund_recorded(conn: asyncpg.Connection, refund_id: str) -> bool:
    """True if we were asked to execute ``refund_id`` (of any payment)."""
    recorded: bool = await conn.fetchval("SELECT EXISTS (SELECT FROM refunds WHERE refund_id = $1)", refund_id)
    return recorded


async def refund_statuses(conn: asyncpg.Connection, payment_id: str) -> dict[str, RefundStatus]:
    rows = await conn.fetch("SELECT refund_id, status FROM refunds WHERE payment_id = $1", payment_id)
    return {r["refund_id"]: RefundStatus(r["status"]) for r in rows}


async def claim_stale_pending_refund(conn: asyncpg.Connection, older_than_seconds: float) -> str | None:
    """The provider refund id of the attempt pending longest past the threshold, touched so that no instance asks
    about it again before the threshold has passed once more (an instance that does not answer within it lets
    another one ask)."""
    found: str | None = await conn.fetchval(
        "UPDATE refund_attempts a SET updated_at = now()"
        " FROM (SELECT refund_id, attempt FROM refund_attempts WHERE state = 'provider_pending'"
        "       AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT 1"
        "       FOR UPDATE SKIP LOCKED) due"
        " WHERE a.refund_id = due.refund_id AND a.attempt = due.attempt RETURNING a.provider_refund_id",
        older_than_seconds,
    )
    return found
