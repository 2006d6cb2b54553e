"""The sync job: asks the provider about what we cannot otherwise learn.

- Refunds pending at the provider longer than a threshold are polled (the webhook's fallback).
- Payments are scanned for refunds made outside Refundflow (e.g. in the provider's dashboard), each
  reported once as refund.external_detected so that the refundable amount stays true.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from refundflow_processor import repository
from refundflow_processor.payment_provider import PaymentProvider, ProviderRefund, ProviderUnavailable
from refundflow_processor.refund_outcomes import SOURCE, complete_pending
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.events import RefundExternalDetected
from refundflow_shared.outbox import add_event
from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)


class RefundSync:
    def __init__(self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings) -> None:
        self._pool = pool
        self._provider = provider
        self._settings = settings

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except (*RECOVERABLE, ProviderUnavailable) as exc:
                log.warning("refund_sync_failed", error=repr(exc))
            await asyncio.sleep(self._settings.sync_interval_seconds)

    async def sync_once(self) -> None:
        await self.poll_pending_refunds()
        await self.scan_for_external_refunds()

    async def poll_pending_refunds(self) -> int:
        """Finish refunds the provider has decided on; returns how many were recorded."""
        async with self._pool.acquire() as conn:
            stale = await repository.stale_pending_refund_ids(conn, self._settings.sync_pending_after_seconds, 100)
        recorded = 0
        for provider_refund_id in stale:
            refund = await self._provider.get_refund(provider_refund_id)
            async with self._pool.acquire() as conn, conn.transaction():
                recorded += await complete_pending(conn, refund)
        return recorded

    async def scan_for_external_refunds(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            payments = await repository.payments_to_sync(conn, self._settings.sync_payments_per_run)
        detected = 0
        for payment in payments:
            at_provider = await self._provider.list_refunds(payment["provider_payment_id"])
            async with self._pool.acquire() as conn, conn.transaction():
                detected += await self._record_external(conn, payment, at_provider)
        return detected

    async def _record_external(
        self, conn: asyncpg.Connection, payment: dict[str, object], at_provider: list[ProviderRefund]
    ) -> int:
        payment_id = str(payment["payment_id"])
        known = await repository.known_provider_refund_ids(conn, payment_id)
        ours = await conn.fetch("SELECT refund_id, status FROM refunds WHERE payment_id = $1", payment_id)
        our_status = {r["refund_id"]: r["status"] for r in ours}
        detected = 0
        for refund in at_provider:
            if refund.id in known:
                continue
            if refund.refund_id in our_status and not (
                our_status[refund.refund_id] == "failed" and refund.status == "succeeded"
            ):
                continue  # ours, and being (or already) recorded by the executor
            if not await repository.record_external_refund(conn, refund.id, payment_id, refund.amount, refund.status):
                continue
            log.warning(
                "external_refund_detected",
                payment_id=payment_id,
                provider_refund_id=refund.id,
                ours=refund.refund_id is not None,
            )
            await add_event(
                conn,
                RefundExternalDetected(
                    payment_id=payment_id,
                    merchant_id=str(payment["merchant_id"]),
                    amount=refund.amount,
                    currency=str(payment["currency"]),
                    provider_refund_id=refund.id,
                    provider_payment_id=str(payment["provider_payment_id"]),
                    status=refund.status,
                ),
                source=SOURCE,
            )
            detected += 1
        return detected
