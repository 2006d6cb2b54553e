"""Refunds made outside Refundflow: they still use up the payment and the merchant's balance."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_intake import ledger, repository
from refundflow_shared.events import RefundExternalDetected

log = structlog.get_logger(__name__)


async def record_external_refund(conn: asyncpg.Connection, data: RefundExternalDetected) -> None:
    """Hold the refunded amount so the payment's refundable amount stays true; count it once."""
    refund = data.model_dump()
    if not await repository.insert_external_refund(conn, refund):
        return
    if data.status == "succeeded":
        await repository.add_to_refunded_amount(conn, data.payment_id, data.amount)
        await ledger.debit_external_refund(conn, refund)
    log.warning("external_refund_recorded", provider_refund_id=data.provider_refund_id, amount=data.amount)
