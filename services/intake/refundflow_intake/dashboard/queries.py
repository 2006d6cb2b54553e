"""What the dashboard's lists read: payments with their open requests, the review queue, and the weekly series
the insights charts draw. Reads only; every one is scoped to the signed-in person's merchant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from refundflow_intake import ledger
from refundflow_intake.domain import HOLDING_STATUSES
from refundflow_intake.repository import disputed_sql

Row = dict[str, Any]
PAGE_SIZE = 20


async def payments_page(
    conn: asyncpg.Connection, merchant_id: str, *, page: int, with_requests: bool, search: str | None
) -> tuple[list[Row], bool]:
    """Newest first; ``search`` matches a payment id or a customer email (its start, any case)."""
    conditions, args = ["p.merchant_id = $1"], [merchant_id, [s.value for s in HOLDING_STATUSES]]
    if with_requests:
        conditions.append("EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.status = 'pending')")
    if search:
        args.append(search.strip())
        # Wildcards escaped: the typed text is the address's start, read from payments_by_merchant_email (0890).
        args.append(search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        conditions.append(f"(p.id = ${len(args) - 1} OR lower(p.customer_email) LIKE ${len(args)})")
    rows = await conn.fetch(
        "SELECT p.*, held_by_refunds(p.id, $2::text[]) AS held_by_refunds,"
        f" {disputed_sql('p')}"
        " AS disputed,"
        " (SELECT count(*) FROM refunds r WHERE r.payment_id = p.id AND r.status = 'pending') AS open_requests,"
        " (SELECT r.id FROM refunds r WHERE r.payment_id = p.id AND r.status = 'pending'"
        "   ORDER BY r.created_at LIMIT 1) AS open_request_id"
        f" FROM payments p WHERE {' AND '.join(conditions)}"
        f" ORDER BY p.paid_at DESC, p.id DESC LIMIT {PAGE_SIZE + 1} OFFSET {max(page - 1, 0) * PAGE_SIZE}",
        *args,
    )
    return [dict(r) for r in rows[:PAGE_SIZE]], len(rows) > PAGE_SIZE


async def review_queue(
    conn: asyncpg.Connection, merchant_id: str, *, page: int, status: str | None, reason: str | None
) -> tuple[list[Row], bool]:
    """Pending first, oldest first (the requests waiting longest are at the top), then the rest newest first.

    Two reads, each along an index: the pending (few) from ``refunds_pending_by_merchant``, then, once a page
    reaches past them, the rest from ``refunds_by_merchant``; one sort of both read the merchant's every refund."""
    want, skip = PAGE_SIZE + 1, max(page - 1, 0) * PAGE_SIZE
    rows: list[Row] = []
    if status in (None, "pending"):
        rows = await _queue_part(conn, merchant_id, "r.status = 'pending'", "r.created_at, r.id", reason, want, skip)
    if status != "pending" and len(rows) < want:
        if rows:
            skip = 0
        elif skip and status is None:
            skip = max(skip - await _queue_count(conn, merchant_id, reason), 0)
        rest = "r.status <> 'pending'" if status is None else "r.status = $3"
        rows += await _queue_part(
            conn, merchant_id, rest, "r.created_at DESC, r.id", reason, want - len(rows), skip, status
        )
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


async def _queue_part(
    conn: asyncpg.Connection,
    merchant_id: str,
    condition: str,
    order: str,
    reason: str | None,
    limit: int,
    skip: int,
    status: str | None = None,
) -> list[Row]:
    """The queue's refunds matching ``condition`` (``'pending'`` written out, so the partial index applies to
    every plan of it) and ``reason``, in ``order``."""
    args: list[Any] = [merchant_id, reason] + ([status] if status is not None else [])
    rows = await conn.fetch(
        "SELECT r.*, p.customer_email, p.customer_name, p.product_name FROM refunds r"
        " JOIN payments p ON p.id = r.payment_id"
        f" WHERE r.merchant_id = $1 AND {condition} AND ($2::text IS NULL OR r.reason = $2)"
        f" ORDER BY {order} LIMIT {limit} OFFSET {skip}",
        *args,
    )
    return [dict(r) for r in rows]


async def _queue_count(conn: asyncpg.Connection, merchant_id: str, reason: str | None) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM refunds r WHERE r.merchant_id = $1 AND r.status = 'pending'"
        " AND ($2::text IS NULL OR r.reason = $2)",
        merchant_id,
        reason,
    )
    return count


async def pending_count(conn: asyncpg.Connection, merchant_id: str) -> int:
    """The badge on every page: read from the index of the pending alone."""
    return await _queue_count(conn, merchant_id, None)


async def weekly_series(
    conn: asyncpg.Connection, merchant_id: str, currency: str, start: datetime, end: datetime
) -> list[Row]:
    """Per week (Monday start): paid and how much of it was refunded since (by when it was paid), and refunded as
    the balance counts it (``ledger.REFUNDED_KINDS``), by when it settled."""
    rows = await conn.fetch(
        "WITH weeks AS (SELECT generate_series(date_trunc('week', $3::timestamptz), $4::timestamptz,"
        " interval '1 week') AS week),"
        " paid AS (SELECT date_trunc('week', paid_at) AS week, sum(amount)::bigint AS amount,"
        "  sum(refunded_amount)::bigint AS refunded FROM payments"
        "  WHERE merchant_id = $1 AND currency = $2 AND paid_at >= $3 AND paid_at < $4 GROUP BY 1),"
        " refunded AS (SELECT date_trunc('week', created_at) AS week, -sum(amount)::bigint AS amount"
        "  FROM balance_entries WHERE merchant_id = $1 AND currency = $2"
        f"  AND kind IN ({ledger.REFUNDED_KINDS_SQL}) AND created_at >= $3 AND created_at < $4 GROUP BY 1)"
        " SELECT w.week, coalesce(p.amount, 0)::bigint AS paid, coalesce(p.refunded, 0)::bigint AS paid_refunded,"
        " coalesce(r.amount, 0)::bigint AS refunded FROM weeks w"
        " LEFT JOIN paid p ON p.week = w.week LEFT JOIN refunded r ON r.week = w.week ORDER BY w.week",
        merchant_id,
        currency,
        start,
        end,
    )
    return [dict(r) for r in rows]


async def currencies(conn: asyncpg.Connection, merchant_id: str) -> list[str]:
    """The merchant's currencies, the most used first."""
    rows = await conn.fetch(
        "SELECT currency FROM payments WHERE merchant_id = $1 GROUP BY currency ORDER BY count(*) DESC, currency",
        merchant_id,
    )
    return [r["currency"].strip() for r in rows]
