"""What the processor does with other services' events."""

from __future__ import annotations

import asyncpg
import structlog
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import Event, RefundApproved

from refundflow_processor import repository

log = structlog.get_logger(__name__)


def register(consumer: EventConsumer) -> None:
    @consumer.handles(RefundApproved)
    async def refund_approved(conn: asyncpg.Connection, event: Event, data: RefundApproved) -> None:
        if await repository.accept_refund(conn, data):
            log.info("refund_scheduled")
