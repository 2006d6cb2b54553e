"""Refund insights for one merchant over a period: why, what, how often, and how fast it was decided."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from refundflow_intake import ledger
from refundflow_intake.domain import InvalidPeriod

Row = dict[str, Any]
# A period's figures read every payment and request in it: a year at most (a leap year's 366 days), so that one
# merchant's years of history never hold the database for the others.
LONGEST_PERIOD = timedelta(days=366)


def check_period(start: datetime, end: datetime) -> None:
    """Refuses (``InvalidPeriod``) a period that ends before it starts, or is longer than ``LONGEST_PERIOD``."""
    if start >= end:
        raise InvalidPeriod("from must be before to")
    if end - start > LONGEST_PERIOD:
        raise InvalidPeriod(f"the period may be at most {LONGEST_PERIOD.days} days: ask for a longer one year by year")


async def refund_insights(
    conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime, now: datetime
) -> Row:
    """Requests made in [start, end); products by payments made in [start, end); refunded (money that left, as the
    balance counts it) by when it settled in [start, end); backlog as of ``now``."""
    # Refunded, everywhere here, is what the balance counts (ledger.REFUNDED_KINDS), by when it settled in the period.
    refunded = await conn.fetch(
        "SELECT currency, -sum(amount)::bigint AS amount FROM balance_entries WHERE merchant_id = $1"
        f" AND kind IN ({ledger.REFUNDED_KINDS_SQL}) AND created_at >= $2 AND created_at < $3"
        " GROUP BY currency ORDER BY currency",
        merchant_id,
        start,
        end,
    )
    # Requests asked in the period, and our refunds settled in it (those made at the provider have no reason).
    by_reason = await conn.fetch(
        "WITH asked AS (SELECT reason, currency, count(*) AS requests, sum(amount) AS amount FROM refunds"
        "  WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY reason, currency),"
        " settled AS (SELECT r.reason, e.currency,"
        "  count(*) FILTER (WHERE e.kind = 'refund') - count(*) FILTER (WHERE e.kind = 'refund_reversal') AS refunded,"
        "  -sum(e.amount) AS amount FROM balance_entries e JOIN refunds r ON r.id = e.source_id"
        "  WHERE e.merchant_id = $1 AND e.kind IN ('refund', 'refund_reversal')"
        "  AND e.created_at >= $2 AND e.created_at < $3 GROUP BY r.reason, e.currency)"
        " SELECT coalesce(a.reason, s.reason) AS reason, coalesce(a.currency, s.currency) AS currency,"
        " coalesce(a.requests, 0) AS requests, coalesce(a.amount, 0)::bigint AS amount,"
        " coalesce(s.refunded, 0) AS refunded, coalesce(s.amount, 0)::bigint AS refunded_amount"
        " FROM asked a FULL JOIN settled s ON s.reason = a.reason AND s.currency = a.currency"
        " ORDER BY requests DESC, reason, currency",
        merchant_id,
        start,
        end,
    )
    # Products sold in the period, with what was refunded in it of any of their payments, ours and the provider's.
    by_product = await conn.fetch(
        "WITH per_payment AS (SELECT q.product_id, e.currency, -sum(e.amount) AS amount FROM balance_entries e"
        "  LEFT JOIN refunds r ON e.kind IN ('refund', 'refund_reversal') AND r.id = e.source_id"
        "  LEFT JOIN external_refunds x ON e.kind LIKE 'external%' AND x.provider_refund_id = e.source_id"
        "  JOIN payments q ON q.id = coalesce(r.payment_id, x.payment_id)"
        f"  WHERE e.merchant_id = $1 AND e.kind IN ({ledger.REFUNDED_KINDS_SQL})"
        "  AND e.created_at >= $2 AND e.created_at < $3 GROUP BY q.product_id, e.currency, q.id),"
        " settled AS (SELECT product_id, currency, sum(amount) AS amount, count(*) FILTER (WHERE amount > 0)"
        "  AS payments FROM per_payment GROUP BY product_id, currency),"
        # Counted once for all products: a subquery per product read every request of the period each time.
        " asked AS (SELECT q.product_id, q.currency, count(*) AS requests FROM refunds r"
        "  JOIN payments q ON q.id = r.payment_id WHERE r.merchant_id = $1 AND r.created_at >= $2"
        "  AND r.created_at < $3 GROUP BY q.product_id, q.currency)"
        " SELECT p.product_id, max(p.product_name) AS product_name, p.currency, count(*) AS payments,"
        " sum(p.amount)::bigint AS paid_amount, coalesce(max(s.amount), 0)::bigint AS refunded_amount,"
        " coalesce(max(s.payments), 0) AS refunded_payments, coalesce(max(a.requests), 0) AS requests"
        " FROM payments p LEFT JOIN settled s ON s.product_id = p.product_id AND s.currency = p.currency"
        " LEFT JOIN asked a ON a.product_id = p.product_id AND a.currency = p.currency"
        " WHERE p.merchant_id = $1 AND p.paid_at >= $2 AND p.paid_at < $3"
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
        "refunded": [dict(r) for r in refunded],
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
