"""SQL for the processor's schema; functions take the caller's connection (and transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from refundflow_shared.events import RefundApproved

ATTEMPTS_CHANNEL = "processor_refund_attempts"


def idempotency_key(refund_id: str, attempt: int) -> str:
    return f"refund_{refund_id}_{attempt}"


async def accept_refund(conn: asyncpg.Connection, data: RefundApproved) -> bool:
    """Record an approved refund and schedule its first attempt; False if it was already known."""
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
    await conn.execute(
        "INSERT INTO refund_attempts (refund_id, attempt, idempotency_key, state) VALUES ($1, 1, $2, 'scheduled')",
        data.refund_id,
        idempotency_key(data.refund_id, 1),
    )
    await conn.execute("SELECT pg_notify($1, '')", ATTEMPTS_CHANNEL)  # delivered when this commits
    return True


async def claim_due_attempt(conn: asyncpg.Connection) -> dict[str, Any] | None:
    """Lock the next due attempt; SKIP LOCKED lets several executors share the work."""
    row = await conn.fetchrow(
        "SELECT a.refund_id, a.attempt, a.idempotency_key, a.tries, r.payment_id, r.merchant_id,"
        " r.customer_email, r.amount, r.currency, r.provider_payment_id, r.payment_amount"
        " FROM refund_attempts a JOIN refunds r ON r.refund_id = a.refund_id"
        " WHERE a.state = 'scheduled' AND a.next_try_at <= now()"
        " ORDER BY a.next_try_at LIMIT 1 FOR UPDATE OF a SKIP LOCKED"
    )
    return dict(row) if row else None


async def reschedule_attempt(
    conn: asyncpg.Connection, refund_id: str, attempt: int, next_try_at: datetime, error: str
) -> None:
    await conn.execute(
        "UPDATE refund_attempts SET tries = tries + 1, next_try_at = $3, last_error = $4, updated_at = now()"
        " WHERE refund_id = $1 AND attempt = $2",
        refund_id,
        attempt,
        next_try_at,
        error,
    )


async def finish_attempt(
    conn: asyncpg.Connection,
    refund_id: str,
    attempt: int,
    state: str,
    *,
    provider_refund_id: str | None,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE refund_attempts SET state = $3, provider_refund_id = $4, last_error = coalesce($5, last_error),"
        " tries = tries + 1, updated_at = now() WHERE refund_id = $1 AND attempt = $2",
        refund_id,
        attempt,
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
    total: int = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE payment_id = $1 AND status = 'succeeded'",
        payment_id,
    )
    return total
