"""Refund insights for one merchant over a period: why, what, how often, and how fast it was decided."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

Row = dict[str, Any]


async def refund_insights(
    conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime, now: datetime
) -> Row:
    """Requests made in [start, end); products by payments made in [start, end); backlog as of ``now``."""
    by_reason = await conn.fetch(
        "SELECT reason, currency, count(*) AS requests, coalesce(sum(amount), 0)::bigint AS amount,"
        " count(*) FILTER (WHERE status = 'succeeded') AS refunded,"
        " coalesce(sum(amount) FILTER (WHERE status = 'succeeded'), 0)::bigint AS refunded_amount"
        " FROM refunds WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3"
        " GROUP BY reason, currency ORDER BY requests DESC, reason, currency",
        merchant_id,
        start,
        end,
    )
    by_product = await conn.fetch(
        "SELECT p.product_id, max(p.product_name) AS product_name, p.currency, count(*) AS payments,"
        " sum(p.amount)::bigint AS paid_amount, sum(p.refunded_amount)::bigint AS refunded_amount,"
        " count(*) FILTER (WHERE p.refunded_amount > 0) AS refunded_payments,"
        " (SELECT count(*) FROM refunds r JOIN payments q ON q.id = r.payment_id WHERE r.merchant_id = $1"
        "   AND q.product_id = p.product_id AND q.currency = p.currency"
        "   AND r.created_at >= $2 AND r.created_at < $3) AS requests"
        " FROM payments p WHERE p.merchant_id = $1 AND p.paid_at >= $2 AND p.paid_at < $3"
        " GROUP BY p.product_id, p.currency ORDER BY p.product_id, p.currency",
        merchant_id,
        start,
        end,
    )
    timing = await conn.fetchrow(
        "SELECT count(*) AS decided,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS median,"
        " percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS p90"
        " FROM refunds WHERE merchant_id = $1 AND decided_at IS NOT NULL AND created_at >= $2 AND created_at < $3",
        merchant_id,
        start,
        end,
    )
    backlog = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE created_at <= $2) AS over_24h, count(*) FILTER (WHERE created_at <= $3)"
        " AS over_48h FROM refunds WHERE merchant_id = $1 AND status = 'pending'",
        merchant_id,
        now - timedelta(hours=24),
        now - timedelta(hours=48),
    )
    return {
        "by_reason": [dict(r) for r in by_reason],
        "by_product": [
            {**dict(p), "refund_rate": round(p["refunded_amount"] / p["paid_amount"], 4)} for p in by_product
        ],
        "decisions": {
            "count": timing["decided"],
            "median_seconds_to_decision": _seconds(timing["median"]),
            "p90_seconds_to_decision": _seconds(timing["p90"]),
        },
        "pending_over_24h": backlog["over_24h"],
        "pending_over_48h": backlog["over_48h"],
    }


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)
