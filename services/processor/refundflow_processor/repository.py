"""SQL for the processor's schema; functions take the caller's connection (and transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from refundflow_shared.events import PaymentSucceeded, RefundApproved

ATTEMPTS_CHANNEL = "processor_refund_attempts"
Row = dict[str, Any]

# What the executor and the outcome recorder need of an attempt and its refund.
_ATTEMPT_COLUMNS = (
    "a.refund_id, a.attempt, a.idempotency_key, a.tries, a.server_errors, a.state, a.created_at AS attempt_created_at,"
    " r.payment_id, r.merchant_id, r.customer_email, r.amount, r.currency, r.provider_payment_id,"
    " r.payment_amount, r.provider_calls"
)


def idempotency_key(refund_id: str, attempt: int) -> str:
    return f"refund_{refund_id}_{attempt}"


async def remember_payment(
    conn: asyncpg.Connection,
    *,
    payment_id: str,
    merchant_id: str,
    provider_payment_id: str,
    amount: int,
    currency: str,
) -> None:
    await conn.execute(
        "INSERT INTO payments (payment_id, merchant_id, provider_payment_id, amount, currency)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO NOTHING",
        payment_id,
        merchant_id,
        provider_payment_id,
        amount,
        currency,
    )


async def remember_paid(conn: asyncpg.Connection, data: PaymentSucceeded) -> None:
    await remember_payment(
        conn,
        payment_id=data.payment_id,
        merchant_id=data.merchant_id,
        provider_payment_id=data.provider_payment_id,
        amount=data.amount,
        currency=data.currency,
    )


async def accept_refund(conn: asyncpg.Connection, data: RefundApproved) -> bool:
    """Record an approved refund and schedule its first attempt; False if it was already known."""
    await remember_payment(
        conn,
        payment_id=data.payment_id,
        merchant_id=data.merchant_id,
        provider_payment_id=data.provider_payment_id,
        amount=data.payment_amount,
        currency=data.currency,
    )
    status = await conn.execute(
        "INSERT INTO refunds (refund_id, payment_id, merchant_id, customer_email, amount, currency,"
        " provider_payment_id, payment_amount, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'processing')"
        " ON CONFLICT (refund_id) DO NOTHING",
        data.refund_id,
        data.payment_id,
        data.merchant_id,
        data.customer_email,
        data.amount,
        data.currency,
        data.provider_payment_id,
        data.payment_amount,
    )
    if status != "INSERT 0 1":
        return False
    await schedule_attempt(conn, data.refund_id, 1)
    return True


async def schedule_attempt(conn: asyncpg.Connection, refund_id: str, attempt: int, at: datetime | None = None) -> None:
    await conn.execute(
        "INSERT INTO refund_attempts (refund_id, attempt, idempotency_key, state, next_try_at)"
        " VALUES ($1, $2, $3, 'scheduled', coalesce($4, now()))",
        refund_id,
        attempt,
        idempotency_key(refund_id, attempt),
        at,
    )
    await conn.execute("SELECT pg_notify($1, '')", ATTEMPTS_CHANNEL)  # delivered when this commits


async def claim_due_attempt(conn: asyncpg.Connection) -> Row | None:
    """Lock the next due attempt; SKIP LOCKED lets several executors share the work."""
    row = await conn.fetchrow(
        f"SELECT {_ATTEMPT_COLUMNS} FROM refund_attempts a JOIN refunds r ON r.refund_id = a.refund_id"
        " WHERE a.state = 'scheduled' AND a.next_try_at <= now()"
        " ORDER BY a.next_try_at LIMIT 1 FOR UPDATE OF a SKIP LOCKED"
    )
    return dict(row) if row else None


async def lock_pending_attempt(conn: asyncpg.Connection, provider_refund_id: str) -> Row | None:
    """The attempt waiting on this provider refund, locked; None if it is not (or no longer) pending."""
    row = await conn.fetchrow(
        f"SELECT {_ATTEMPT_COLUMNS} FROM refund_attempts a JOIN refunds r ON r.refund_id = a.refund_id"
        " WHERE a.provider_refund_id = $1 AND a.state = 'provider_pending' FOR UPDATE OF a",
        provider_refund_id,
    )
    return dict(row) if row else None


async def stale_pending_refund_ids(conn: asyncpg.Connection, older_than_seconds: float, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT provider_refund_id FROM refund_attempts WHERE state = 'provider_pending'"
        " AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2",
        older_than_seconds,
        limit,
    )
    return [r["provider_refund_id"] for r in rows]


async def count_provider_call(conn: asyncpg.Connection, refund_id: str) -> int:
    calls: int = await conn.fetchval(
        "UPDATE refunds SET provider_calls = provider_calls + 1 WHERE refund_id = $1 RETURNING provider_calls",
        refund_id,
    )
    return calls


async def reschedule_attempt(
    conn: asyncpg.Connection, attempt: Row, next_try_at: datetime, error: str, *, server_error: bool
) -> None:
    await conn.execute(
        "UPDATE refund_attempts SET tries = tries + 1, next_try_at = $3, last_error = $4, updated_at = now(),"
        " server_errors = CASE WHEN $5 THEN server_errors + 1 ELSE 0 END WHERE refund_id = $1 AND attempt = $2",
        attempt["refund_id"],
        attempt["attempt"],
        next_try_at,
        error,
        server_error,
    )


async def set_attempt_state(
    conn: asyncpg.Connection,
    attempt: Row,
    state: str,
    *,
    provider_refund_id: str | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE refund_attempts SET state = $3, provider_refund_id = coalesce($4, provider_refund_id),"
        " last_error = coalesce($5, last_error), tries = tries + 1, updated_at = now()"
        " WHERE refund_id = $1 AND attempt = $2",
        attempt["refund_id"],
        attempt["attempt"],
        state,
        provider_refund_id,
        error,
    )


async def finish_refund(
    conn: asyncpg.Connection,
    refund_id: str,
    status: str,
    *,
    provider_refund_id: str | None,
    failure_reason: str | None = None,
    failure_message: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE refunds SET status = $2, provider_refund_id = $3, failure_reason = $4, failure_message = $5,"
        " updated_at = now() WHERE refund_id = $1",
        refund_id,
        status,
        provider_refund_id,
        failure_reason,
        failure_message,
    )


async def refunded_total(conn: asyncpg.Connection, payment_id: str) -> int:
    """What has reached the customer: our succeeded refunds plus succeeded refunds made elsewhere."""
    total: int = await conn.fetchval(
        "SELECT (SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = $1 AND status = 'succeeded')"
        " + (SELECT coalesce(sum(amount), 0) FROM external_refunds WHERE payment_id = $1 AND status = 'succeeded')",
        payment_id,
    )
    return int(total)


async def payments_to_sync(conn: asyncpg.Connection, limit: int) -> list[Row]:
    """The least recently scanned payments, marked scanned now (the caller's transaction holds them)."""
    rows = await conn.fetch(
        "UPDATE payments SET last_synced_at = now() WHERE payment_id IN ("
        " SELECT payment_id FROM payments ORDER BY last_synced_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING payment_id, merchant_id, provider_payment_id, amount, currency",
        limit,
    )
    return [dict(r) for r in rows]


async def known_provider_refund_ids(conn: asyncpg.Connection, payment_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT a.provider_refund_id FROM refund_attempts a JOIN refunds r ON r.refund_id = a.refund_id"
        " WHERE r.payment_id = $1 AND a.provider_refund_id IS NOT NULL"
        " UNION SELECT provider_refund_id FROM external_refunds WHERE payment_id = $1",
        payment_id,
    )
    return {r[0] for r in rows}


async def record_external_refund(
    conn: asyncpg.Connection, provider_refund_id: str, payment_id: str, amount: int, status: str
) -> bool:
    result = await conn.execute(
        "INSERT INTO external_refunds (provider_refund_id, payment_id, amount, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        provider_refund_id,
        payment_id,
        amount,
        status,
    )
    return bool(result == "INSERT 0 1")
