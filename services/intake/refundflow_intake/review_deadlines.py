"""Requests pending longer than the merchant's review target: ``refund.review_overdue``, once each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import structlog

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake import repository
from refundflow_intake.domain import RefundStatus
from refundflow_shared.events import RefundReviewOverdue
from refundflow_shared.outbox import add_event
from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)

REVIEW_CLOCK = "system:review_clock"
SOURCE = "refundflow/intake"
_SHORTEST_TARGET = timedelta(hours=1)  # the policy's minimum: nothing younger can be overdue


async def flag_overdue(conn: asyncpg.Connection, now: datetime, *, batch: int = 200) -> int:
    """Emit ``refund.review_overdue`` for every pending request past its target; returns how many."""
    candidates = await conn.fetch(
        "SELECT r.id, r.merchant_id, r.payment_id, r.amount, r.currency, r.created_at, p.product_id"
        " FROM refunds r JOIN payments p ON p.id = r.payment_id"
        " WHERE r.status = 'pending' AND r.review_overdue_at IS NULL AND r.created_at <= $1"
        " ORDER BY r.created_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED",
        now - _SHORTEST_TARGET,
        batch,
    )
    flagged = 0
    for refund in candidates:
        policy = await policies.effective_policy(conn, refund["merchant_id"], refund["product_id"])
        if now - refund["created_at"] < timedelta(hours=policy.review_target_hours):
            continue
        await conn.execute("UPDATE refunds SET review_overdue_at = $2 WHERE id = $1", refund["id"], now)
        note = f"pending longer than the {policy.review_target_hours} h review target"
        await repository.add_timeline_entry(
            conn, refund["id"], RefundStatus.PENDING, REVIEW_CLOCK, note, action="review_overdue"
        )
        await add_event(
            conn,
            RefundReviewOverdue(
                refund_id=refund["id"],
                payment_id=refund["payment_id"],
                merchant_id=refund["merchant_id"],
                amount=refund["amount"],
                currency=refund["currency"],
                requested_at=refund["created_at"],
                review_target_hours=policy.review_target_hours,
            ),
            source=SOURCE,
        )
        flagged += 1
    return flagged


async def watch(pool: asyncpg.Pool, clock: Callable[[], datetime], *, interval: float) -> None:
    """Check for overdue requests every ``interval`` seconds until cancelled."""
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                flagged = await flag_overdue(conn, clock())
            if flagged:
                log.info("refund_reviews_overdue", count=flagged)
        except RECOVERABLE as exc:
            log.warning("review_deadline_check_failed", error=repr(exc))
        await asyncio.sleep(interval)
