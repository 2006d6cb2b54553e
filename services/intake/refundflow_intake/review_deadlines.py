"""Requests pending longer than the merchant's review target: ``refund.review_overdue``, once each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
from pydantic import ValidationError

from refundflow_intake import repository
from refundflow_intake.domain import RefundStatus
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import RefundReviewOverdue
from refundflow_shared.outbox import add_event
from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)

REVIEW_CLOCK = "system:review_clock"


async def flag_overdue(conn: asyncpg.Connection, now: datetime, *, batch: int = 200) -> int:
    """Emit ``refund.review_overdue`` for up to ``batch`` pending requests past their deadline, the longest
    overdue first; returns how many. The deadline was fixed when the request was made, so only what is due is
    read: no merchant's requests can keep another's from being seen, nor can a row no alert can describe."""
    overdue = await conn.fetch(
        "SELECT id, merchant_id, payment_id, amount, currency, created_at, review_target_hours FROM refunds"
        " WHERE status = 'pending' AND review_overdue_at IS NULL AND review_due_at <= $1"
        " ORDER BY review_due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        batch,
    )
    for refund in overdue:
        hours = refund["review_target_hours"]
        alert = _alert_for(refund)
        await conn.execute("UPDATE refunds SET review_overdue_at = $2 WHERE id = $1", refund["id"], now)
        note = f"pending longer than the {hours} h review target"
        if alert is None:
            note += "; the team was not alerted: the request's data cannot make an alert (see the logs)"
        await repository.add_timeline_entry(
            conn, refund["id"], RefundStatus.PENDING, REVIEW_CLOCK, note, action="review_overdue"
        )
        if alert is not None:
            await add_event(conn, alert, source=INTAKE.source)
    return len(overdue)


def _alert_for(refund: asyncpg.Record) -> RefundReviewOverdue | None:
    """The alert for an overdue request; None (logged) when its row cannot make one, e.g. a review target an older
    release allowed: marked all the same, it must not stop the clock for every other request."""
    try:
        return RefundReviewOverdue(
            refund_id=refund["id"],
            payment_id=refund["payment_id"],
            merchant_id=refund["merchant_id"],
            amount=refund["amount"],
            currency=refund["currency"],
            requested_at=refund["created_at"],
            review_target_hours=refund["review_target_hours"],
        )
    except ValidationError as exc:
        fields = sorted({".".join(map(str, error["loc"])) for error in exc.errors()})
        log.error("review_overdue_alert_unmade", refund_id=refund["id"], invalid_fields=fields)
        return None


async def watch(pool: asyncpg.Pool, clock: Callable[[], datetime], *, interval: float, batch: int = 200) -> None:
    """Check for overdue requests every ``interval`` seconds (at once again while full batches come back) until
    cancelled."""
    while True:
        flagged = 0
        try:
            async with pool.acquire() as conn, conn.transaction():
                flagged = await flag_overdue(conn, clock(), batch=batch)
            if flagged:
                log.info("refund_reviews_overdue", count=flagged)
        except RECOVERABLE as exc:
            log.warning("review_deadline_check_failed", error=repr(exc))
        if flagged < batch:
            await asyncio.sleep(interval)
