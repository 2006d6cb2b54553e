"""`refundflow stuck`: refunds that need an operator: processing for too long, an outcome the provider has not
told us yet (attempt state ``unknown``), and requests waiting past the merchant's review target."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from refundflow_cli.connections import database
from refundflow_cli.outcomes import ExitCode
from refundflow_cli.output import Output, age, when
from refundflow_cli.settings import CliSettings
from refundflow_shared.money import format_amount

_PROCESSING = """
SELECT id AS refund_id, payment_id, merchant_id, amount, currency, updated_at AS since,
       extract(epoch FROM now() - updated_at)::float8 AS seconds
FROM intake.refunds WHERE status = 'processing' AND updated_at < now() - $1::interval
ORDER BY updated_at LIMIT $2
"""
# The processor's latest attempt of each refund: why it is not done yet.
_LATEST_ATTEMPTS = """
SELECT DISTINCT ON (refund_id) refund_id, attempt, state, tries, next_try_at, last_error
FROM processor.refund_attempts WHERE refund_id = ANY($1::text[]) ORDER BY refund_id, attempt DESC
"""
_UNKNOWN = """
SELECT a.refund_id, a.attempt, a.idempotency_key, a.tries, a.next_try_at, a.last_error, a.updated_at AS since,
       extract(epoch FROM now() - a.updated_at)::float8 AS seconds, r.payment_id, r.merchant_id
FROM processor.refund_attempts a JOIN processor.refunds r USING (refund_id)
WHERE a.state = 'unknown' ORDER BY a.updated_at LIMIT $1
"""
_OVERDUE = """
SELECT id AS refund_id, payment_id, merchant_id, amount, currency, created_at, review_due_at, review_overdue_at,
       extract(epoch FROM now() - review_due_at)::float8 AS seconds
FROM intake.refunds WHERE status = 'pending' AND review_due_at < now()
ORDER BY review_due_at LIMIT $1
"""


async def find_stuck(settings: CliSettings, out: Output, *, older_than: timedelta, limit: int) -> ExitCode:
    async with database(settings) as conn:
        processing = await _rows(conn, _PROCESSING, older_than, limit)
        if processing:
            attempts = {
                r["refund_id"]: r for r in await _rows(conn, _LATEST_ATTEMPTS, [p["refund_id"] for p in processing])
            }
            for refund in processing:
                refund["latest_attempt"] = attempts.get(refund["refund_id"])
        unknown = await _rows(conn, _UNKNOWN, limit)
        overdue = await _rows(conn, _OVERDUE, limit)
    report = {
        "older_than_seconds": older_than.total_seconds(),
        "processing": processing,
        "unknown_outcomes": unknown,
        "review_overdue": overdue,
    }
    found = bool(processing or unknown or overdue)
    if out.json_mode:
        out.document(report | {"found": found})
        return ExitCode.PROBLEMS_FOUND if found else ExitCode.OK
    out.table(
        f"Processing for longer than {age(older_than.total_seconds())}",
        ["refund", "payment", "merchant", "amount", "processing for", "latest attempt", "last error"],
        [
            [
                r["refund_id"],
                r["payment_id"],
                r["merchant_id"],
                format_amount(r["amount"], r["currency"]),
                age(r["seconds"]),
                _attempt(r["latest_attempt"]),
                (r["latest_attempt"] or {}).get("last_error"),
            ]
            for r in processing
        ],
    )
    out.table(
        "Outcome unknown at the provider (reconciliation retries; never a new call meanwhile)",
        ["refund", "attempt", "idempotency key", "tries", "unknown for", "next try", "last error"],
        [
            [
                r["refund_id"],
                r["attempt"],
                r["idempotency_key"],
                r["tries"],
                age(r["seconds"]),
                when(r["next_try_at"]),
                r["last_error"],
            ]
            for r in unknown
        ],
    )
    out.table(
        "Past the review target",
        ["refund", "payment", "merchant", "amount", "requested", "due", "overdue by"],
        [
            [
                r["refund_id"],
                r["payment_id"],
                r["merchant_id"],
                format_amount(r["amount"], r["currency"]),
                when(r["created_at"]),
                when(r["review_due_at"]),
                age(r["seconds"]),
            ]
            for r in overdue
        ],
    )
    return ExitCode.PROBLEMS_FOUND if found else ExitCode.OK


async def _rows(conn: asyncpg.Connection, query: str, *args: Any) -> list[dict[str, Any]]:
    """The rows as dicts; none when the service's schema does not exist yet (it never started)."""
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return []


def _attempt(attempt: dict[str, Any] | None) -> str:
    if attempt is None:
        return "none yet (refund.approved not handled by the processor?)"
    return f"#{attempt['attempt']} {attempt['state']}, {attempt['tries']} tries, next {when(attempt['next_try_at'])}"
