"""What intake does with other services' events."""

from __future__ import annotations

import asyncpg
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import Event, RefundFailed, RefundSucceeded

from refundflow_intake.domain import RefundStatus
from refundflow_intake.refund_desk import record_refund_outcome


def register(consumer: EventConsumer) -> None:
    @consumer.handles(RefundSucceeded)
    async def refund_succeeded(conn: asyncpg.Connection, event: Event, data: RefundSucceeded) -> None:
        await record_refund_outcome(conn, data.refund_id, RefundStatus.SUCCEEDED, actor=event.source)

    @consumer.handles(RefundFailed)
    async def refund_failed(conn: asyncpg.Connection, event: Event, data: RefundFailed) -> None:
        await record_refund_outcome(
            conn, data.refund_id, RefundStatus.FAILED, actor=event.source, failure_reason=data.failure_reason
        )
