"""The sync job: asks the provider about what we cannot otherwise learn, and never dies doing so.

- Refunds pending at the provider longer than a threshold are polled (the webhook's fallback), ours and
  external ones, until final.
- Payments are scanned for refunds made outside Refundflow and for our refunds that failed after they had
  succeeded (reversals): recent ones often, old ones seldom, none past the refund window (``sync_schedule``). A
  refund made for a refund id of ours we have no record of (after a database restore, until the approval is read
  again) is not external: it waits, and the team is told if it stays unknown. One
  payment's error is logged and the payment flagged (retried with backoff); the
  others carry on. A refused key pauses the job with the executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import structlog

from refundflow_processor import payment_repository, repository
from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.external_refunds import alert_about_provider_refund, record_external
from refundflow_processor.payment_provider import (
    PaymentProvider,
    ProviderAuthFailed,
    ProviderRefund,
    ProviderRefused,
    ProviderUnavailable,
)
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.provider_updates import apply_provider_update
from refundflow_processor.records import Payment, RefundStatus, names_our_refund
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.sync_schedule import next_scan_at
from refundflow_shared.backoff import exponential

log = structlog.get_logger(__name__)
T = TypeVar("T")
_POLL_LIMIT = 100
_RESCHEDULE_BATCH = 1000  # payments rescheduled in one transaction


class RefundSync:
    def __init__(
        self, pool: asyncpg.Pool, provider: PaymentProvider, settings: ProcessorSettings, pause: ProviderPause
    ) -> None:
        self._pool, self._provider, self._settings, self._pause = pool, provider, settings, pause
        self._policy = AttemptPolicy.from_settings(settings)

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the job must outlive anything one run meets; the next run tries again
                log.exception("refund_sync_failed")
            await asyncio.sleep(self._settings.sync_interval_seconds)

    async def sync_once(self) -> None:
        if self._pause.remaining() > 0:
            return
        try:
            await self.poll_pending_refunds()
            await self.scan_payments()
        except ProviderAuthFailed as exc:
            log.error("provider_auth_failed", error=str(exc), calls_paused_for=self._pause.trip())

    async def poll_pending_refunds(self) -> int:
        """Ask about refunds pending for long (ours, then external ones); returns how many changed. Each is claimed
        as it is asked about (``FOR UPDATE SKIP LOCKED``, and touched): two instances never ask about one."""
        after = self._settings.sync_pending_after_seconds
        recorded = 0
        for claim in (repository.claim_stale_pending_refund, payment_repository.claim_pending_external_refund):
            for _ in range(_POLL_LIMIT):
                async with self._pool.acquire() as conn:
                    provider_refund_id = await claim(conn, after)
                if provider_refund_id is None:
                    break
                recorded += await self._poll(provider_refund_id)
        return recorded

    async def _poll(self, provider_refund_id: str) -> int:
        try:
            reported = await self._call(self._provider.get_refund(provider_refund_id))
            if reported.id != provider_refund_id:  # recorded, it would change the refund the answer names
                raise ProviderUnavailable(f"malformed answer: asked for {provider_refund_id}, answered {reported.id}")
            async with self._pool.acquire() as conn, conn.transaction():
                # First: it locks the payment before the refund.
                return int(
                    await apply_provider_update(conn, reported, policy=self._policy, provider=self._provider.name)
                )
        except ProviderAuthFailed:
            raise
        except (ProviderRefused, ProviderUnavailable, TimeoutError) as exc:  # one refund's; the others are still asked
            log.warning(
                "pending_refund_poll_failed", provider_refund_id=provider_refund_id, error=str(exc) or repr(exc)
            )
            return 0
        except Exception:  # one refund's trouble is logged; the others are still asked about
            log.exception("pending_refund_poll_failed", provider_refund_id=provider_refund_id)
            return 0

    async def scan_payments(self) -> int:
        """Scan a batch of the payments due a scan at the provider, each leased as it is scanned; returns how many
        events the scan published."""
        await self.reschedule_made_due()
        lease_seconds = self._settings.executor_lease_seconds  # outlives the one call a scan makes
        scanned: list[str] = []
        published = 0
        while len(scanned) < self._settings.sync_payments_per_run:
            async with self._pool.acquire() as conn:
                lease = await payment_repository.claim_payment_to_sync(conn, lease_seconds, scanned)
            if lease is None:
                break
            scanned.append(lease.payment.payment_id)
            published += await self._scan(lease)
        return published

    async def reschedule_made_due(self) -> None:
        """Schedule again, under the configured window and with no call to the provider, the payments made due for
        their schedule to decide (migration 0862: 0840 closed them after a year): from their last scan, as that
        scan would have scheduled them; never again when it came after their window closed."""
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                found = await payment_repository.payments_to_reschedule(conn, _RESCHEDULE_BATCH)
                await payment_repository.reschedule_payments(
                    conn, {payment_id: self._next_scan(known, scanned) for payment_id, known, scanned in found}
                )
            if len(found) < _RESCHEDULE_BATCH:
                return

    def _next_scan(self, known_since: datetime, scanned_at: datetime) -> datetime | None:
        return next_scan_at(
            known_since,
            scanned_at,
            window=timedelta(days=self._settings.sync_refund_window_days),
            shortest_gap=timedelta(seconds=self._settings.sync_interval_seconds),
        )

    async def _scan(self, lease: payment_repository.SyncLease) -> int:
        payment = lease.payment
        try:
            at_provider = await self._call(self._provider.list_refunds(payment.provider_payment_id))
            async with self._pool.acquire() as conn, conn.transaction():
                if not await payment_repository.lock_sync_lease(conn, lease):
                    log.warning("payment_sync_lease_lost", payment_id=payment.payment_id)
                    return 0
                published = await self._record_scan(conn, payment, at_provider)
                next_scan = self._next_scan(lease.known_since, lease.claimed_at)
                await payment_repository.record_payment_synced(conn, lease, next_scan)
                return published
        except ProviderAuthFailed:
            raise
        except Exception as exc:  # flag it and carry on: one payment never stops the others
            if isinstance(exc, ProviderRefused | ProviderUnavailable | TimeoutError):
                log.warning("payment_sync_failed", payment_id=payment.payment_id, error=str(exc) or repr(exc))
            else:
                log.exception("payment_sync_failed", payment_id=payment.payment_id)
            # The shared backoff (its doubling bounded): doubled in SQL, it overflowed after ~1,000 failures.
            retry_after = exponential(
                lease.failures + 1,
                base=self._settings.sync_interval_seconds,
                cap=self._settings.sync_error_retry_max_seconds,
            )
            async with self._pool.acquire() as conn:
                await payment_repository.record_payment_sync_failed(
                    conn, lease, f"{type(exc).__name__}: {exc}", retry_after_seconds=retry_after
                )
            return 0

    async def _record_scan(self, conn: asyncpg.Connection, payment: Payment, at_provider: list[ProviderRefund]) -> int:
        ours = await repository.refund_statuses(conn, payment.payment_id)
        made_by_our_attempts = await payment_repository.known_provider_refund_ids(conn, payment.payment_id)
        published = 0
        # Oldest first: an older refund's failure reaches intake before a newer refund, so the payment never looks
        # refunded past its amount meanwhile.
        for reported in reversed(at_provider):
            if reported.of_payment(payment.provider_payment_id) is False:
                await self._skip_another_payments(conn, payment, reported)
            elif reported.id in made_by_our_attempts:
                published += await apply_provider_update(
                    conn, reported, policy=self._policy, provider=self._provider.name
                )
            elif reported.refund_id in ours and await repository.refund_in_flight(
                conn, reported.refund_id, reported.id
            ):
                continue  # ours, being (or about to be) recorded by the executor
            elif reported.refund_id in ours:
                published += await self._book_another_for_ours(conn, payment, reported, ours[reported.refund_id])
            elif (
                reported.refund_id is not None
                and names_our_refund(reported.refund_id)
                and not await repository.refund_recorded(conn, reported.refund_id)
            ):
                await self._await_approval(conn, payment, reported)
            else:
                published += await record_external(conn, payment, reported)
        return published

    async def _book_another_for_ours(
        self, conn: asyncpg.Connection, payment: Payment, reported: ProviderRefund, ours: RefundStatus
    ) -> int:
        """A refund made for one of our refunds that is not the one its attempts recorded, ours being done: the
        money it moves leaves all the same, so it is booked as external, and the team is told once (a duplicate,
        when ours succeeded)."""
        new = await payment_repository.lock_external_refund(conn, reported.id) is None
        if not await record_external(conn, payment, reported):
            return 0
        if new:
            log.error("duplicate_refund", provider_refund_id=reported.id, refund_id=reported.refund_id, ours=ours)
            await alert_about_provider_refund(
                conn,
                payment,
                reported,
                kind="duplicate_refund",
                title="Another refund at the provider was made for one of our refunds; booked as made outside",
                refund_id=reported.refund_id,
                status=reported.status,
                ours=ours.value,
                effect="counted against the payment as a refund made outside Refundflow",
            )
        return 1

    async def _skip_another_payments(
        self, conn: asyncpg.Connection, payment: Payment, reported: ProviderRefund
    ) -> None:
        """A refund listed for the payment that, its own answer says, refunds another: booked, it would take the
        scanned payment's room; the team is told once."""
        if not await payment_repository.note_refund_of_another_payment(conn, payment, reported):
            return
        log.error("provider_refund_of_another_payment", provider_refund_id=reported.id, of=reported.payment_ref)
        await alert_about_provider_refund(
            conn,
            payment,
            reported,
            kind="provider_refund_of_another_payment",
            title="The provider listed a refund of another payment for this payment; nothing was booked",
            listed_as_of=str(reported.payment_ref or reported.charge),
            effect="not counted against this payment",
        )

    async def _await_approval(self, conn: asyncpg.Connection, payment: Payment, reported: ProviderRefund) -> None:
        """A refund made for a refund of ours we have no record of: after a database restore, ours, its approval
        still to be read again (which adopts it). Booked as external, it would take the payment's room from that
        approval; so it waits, and the team is told once if it stays unknown."""
        alert_after = self._settings.sync_unrecorded_refund_alert_after_seconds
        if not await payment_repository.note_unrecorded_refund(conn, payment, reported, alert_after):
            return
        log.error("unrecorded_provider_refund", provider_refund_id=reported.id, refund_id=reported.refund_id)
        await alert_about_provider_refund(
            conn,
            payment,
            reported,
            kind="unrecorded_provider_refund",
            title="A refund at the provider names a refund of ours the processor has no record of; nothing was booked",
            refund_id=reported.refund_id,
            effect="not counted against the payment until its approval is read again (after a database"
            " restore: rewind the processor's consumer); otherwise it was made outside Refundflow",
        )

    async def _call(self, request: Awaitable[T]) -> T:
        async with asyncio.timeout(self._settings.provider_call_deadline_seconds):
            return await request
