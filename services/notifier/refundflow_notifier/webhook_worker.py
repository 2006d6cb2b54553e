"""Delivers queued webhooks over HTTP, signed; retries on the durable schedule, disables dead endpoints.

At least once: a crash after the receiver answered and before the attempt is recorded sends the delivery
again when its lease runs out, with the same ``webhook-id`` so receivers can drop the duplicate. Up to
``webhook_max_in_flight_per_endpoint`` deliveries go to one endpoint at once, so they may arrive out of order:
receivers order by the payload's ``sequence`` within one payment and ``source`` (each service numbers its own
events), and across sources by the refund's status order, then ``time``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import asyncpg
import structlog
from opentelemetry.trace import SpanKind

from refundflow_notifier import merchant_settings, message_queue, outbound_http, webhook_store
from refundflow_notifier.notification_rules import endpoint_disabled_alert
from refundflow_notifier.records import ClaimedDelivery, DeliveredAttempt
from refundflow_notifier.retry_schedule import disables_endpoint, is_success, next_delay
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.webhook_signing import signed_headers
from refundflow_shared import tracing
from refundflow_shared.crash_points import crash_point
from refundflow_shared.event_contract import NOTIFIER
from refundflow_shared.events import WebhookEndpointDisabled
from refundflow_shared.group_commit import GroupCommit
from refundflow_shared.lease_dispatcher import LeaseDispatcher, recorded
from refundflow_shared.metrics import WEBHOOK_DELIVERIES
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)
T = TypeVar("T")

SIGNING_FAILED = "signing_failed"  # no secret of the endpoint opens with our key ring, or one is no whsec_ key
# Nothing is sent unsigned: the delivery waits for our fix (a key put back in the ring), tried at most this often.
SIGNING_RETRY_SECONDS = 60.0


class WebhookWorker:
    def __init__(
        self, pool: asyncpg.Pool, settings: NotifierSettings, http: aiohttp.ClientSession, box: SecretBox | None
    ) -> None:
        self._pool, self._settings, self._http, self._box = pool, settings, http, box
        self._lease = settings.webhook_timeout_seconds + settings.lease_margin_seconds  # outlives the call
        self._delivered: GroupCommit[DeliveredAttempt] = GroupCommit(self._record_delivered)

    def dispatcher(self) -> LeaseDispatcher[ClaimedDelivery, int]:
        s = self._settings
        return LeaseDispatcher(
            self._pool,
            channel="notifier_webhook_deliveries",
            claim=lambda limit, busy: webhook_store.claim_due(
                self._pool,
                limit,
                busy,
                lease_seconds=self._lease,
                per_endpoint=s.webhook_max_in_flight_per_endpoint,
                per_merchant=s.webhook_max_in_flight_per_merchant,
            ),
            key=lambda delivery: delivery.id,
            work=self.deliver,
            max_in_flight=s.webhook_max_in_flight,
            poll_interval=s.webhook_poll_interval_seconds,
            name="webhook_worker",
            gather_seconds=s.delivery_gather_ms / 1000,
            shutdown_grace=self._lease,  # a send and its record finish before the deploy goes on
        )

    async def deliver(self, delivery: ClaimedDelivery) -> None:
        """Deliver in a span continuing the event's trace; the receiver gets it as the ``traceparent`` header. Every
        line logged meanwhile names the merchant (each delivery runs in its own task, so in its own context)."""
        with (
            structlog.contextvars.bound_contextvars(merchant_id=delivery.merchant_id),
            tracing.span("webhook delivery", traceparent=delivery.traceparent, continues=True, kind=SpanKind.CLIENT),
        ):
            await self._deliver(delivery)

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        status_code, error = await self._call(delivery, attempted_at)
        latency_ms = int((time.monotonic() - started) * 1000)
        crash_point("notifier.webhook_answered")
        if status_code is not None and is_success(status_code):
            attempt = DeliveredAttempt(delivery, attempted_at, status_code, latency_ms, error)
            await self._recorded(lambda: self._delivered.write(attempt))
            outcome = "delivered"
        else:

            async def record_failure() -> str:
                async with self._pool.acquire() as conn, conn.transaction():
                    await webhook_store.record_attempt(
                        conn, delivery.id, delivery.attempts, attempted_at, status_code, latency_ms, error
                    )
                    if error == SIGNING_FAILED:
                        return await self._await_signing(conn, delivery)
                    return await self._settle_failure(conn, delivery, status_code)

            outcome = await self._recorded(record_failure)
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        log.info(
            "webhook_attempted",
            delivery=delivery.id,
            endpoint=delivery.endpoint_id,
            event_id=str(delivery.event_id),
            attempt=delivery.attempts,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
        )

    async def _recorded(self, record: Callable[[], Awaitable[T]]) -> T:
        """A record of what a call did, retried while the database is away: a blip never delivers a webhook again."""
        return await recorded(record, name="webhook_worker", settings=self._settings)

    async def _record_delivered(self, delivered: list[DeliveredAttempt]) -> None:
        async with self._pool.acquire() as conn:
            await webhook_store.record_successes(conn, delivered)

    async def _call(self, delivery: ClaimedDelivery, attempted_at: datetime) -> tuple[int | None, str | None]:
        """(status code, error): the error is a coarse category, or for a 2xx None, or ``response_truncated`` when
        its answer was not read to the end (the receiver took the event all the same)."""
        payload = delivery.payload
        try:
            headers = signed_headers(self._secrets(delivery), str(delivery.event_id), attempted_at, payload)
        except ValueError:  # SecretBoxError, or a secret that is not a whsec_ key
            return None, SIGNING_FAILED
        if (traceparent := tracing.current_traceparent()) is not None:
            headers = {**headers, tracing.HTTP_HEADER: traceparent}
        try:
            answer = await outbound_http.post(
                self._http,
                delivery.url,
                payload.encode(),
                headers,
                deadline=self._settings.webhook_timeout_seconds,
                max_response_bytes=self._settings.webhook_max_response_bytes,
            )
        except outbound_http.CallFailed as exc:
            return None, exc.category
        if not is_success(answer.status):
            return answer.status, outbound_http.http_status_error(answer.status)
        return answer.status, None if answer.complete else outbound_http.RESPONSE_TRUNCATED

    def _secrets(self, delivery: ClaimedDelivery) -> list[str]:
        """The endpoint's secrets that open (the current one, and the one it rolled from while that still signs): a
        receiver verifies with either, so one that does not open (logged) leaves the other to sign."""
        if self._box is None:
            raise SecretBoxError("WEBHOOK_SECRET_KEY is not set: cannot sign")
        opened = []
        for which, sealed in (("current", delivery.encrypted_secret), ("previous", delivery.previous_encrypted_secret)):
            if sealed is None:
                continue
            try:
                opened.append(self._box.open(sealed, context=delivery.endpoint_id))
            except SecretBoxError as exc:
                # Not secret=: the log redacts every key so named, and the line would not say which one failed.
                log.error(
                    "webhook_secret_unreadable", endpoint=delivery.endpoint_id, which_secret=which, error=str(exc)
                )
        if not opened:
            raise SecretBoxError("none of the endpoint's secrets opens with the key ring")
        return opened

    async def _await_signing(self, conn: asyncpg.Connection, delivery: ClaimedDelivery) -> str:
        """Nothing was sent, and the cause is ours (a key missing from the ring, WEBHOOK_SECRET_KEYS unset): it never
        counts against the endpoint, which is neither failing nor disabled. The delivery is tried again later."""
        log.error("webhook_not_signed", delivery=delivery.id, endpoint=delivery.endpoint_id, attempt=delivery.attempts)
        schedule = self._settings.webhook_retry_schedule_seconds
        delay = next_delay(schedule, delivery.attempts)
        delay = max(max(schedule, default=0.0) if delay is None else delay, SIGNING_RETRY_SECONDS)
        if not await webhook_store.retry_delivery(conn, delivery, delay):
            return _stale(delivery)
        return "not_signed"

    async def _settle_failure(
        self, conn: asyncpg.Connection, delivery: ClaimedDelivery, status_code: int | None
    ) -> str:
        """Record what a failed attempt means; the outcome, for the metrics (``stale``: the delivery is another
        claim's by now, this result is ignored)."""
        if status_code is not None and disables_endpoint(status_code):
            if not await webhook_store.finish_delivery(conn, delivery, "failed"):
                return _stale(delivery)
            await self._disable(conn, delivery, "the endpoint answered 410 Gone")
            return "endpoint_gone"
        delay = next_delay(self._settings.webhook_retry_schedule_seconds, delivery.attempts)
        if delay is not None:
            if not await webhook_store.retry_delivery(conn, delivery, delay):
                return _stale(delivery)
            return "retrying"
        if not await webhook_store.finish_delivery(conn, delivery, "failed"):
            return _stale(delivery)
        failures = await webhook_store.endpoint_failed_event(conn, delivery.endpoint_id)
        if failures >= self._settings.webhook_disable_after_failed_events:
            await self._disable(conn, delivery, f"{failures} events in a row could not be delivered")
        return "failed"

    async def _disable(self, conn: asyncpg.Connection, delivery: ClaimedDelivery, reason: str) -> None:
        """Disable the endpoint; intake hears of it (so the merchant sees it) and the team is alerted, with it."""
        version = await webhook_store.disable_endpoint(conn, delivery.endpoint_id, reason)
        if version is None:
            return
        log.warning("webhook_endpoint_disabled", endpoint=delivery.endpoint_id, reason=reason)
        disabled = WebhookEndpointDisabled(
            merchant_id=delivery.merchant_id, endpoint_id=delivery.endpoint_id, reason=reason, version=version
        )
        await add_event(conn, disabled, source=NOTIFIER.source)
        prefs = await merchant_settings.preferences(conn, self._settings, delivery.merchant_id)
        alert = endpoint_disabled_alert(delivery.endpoint_id, delivery.url, reason)
        await message_queue.queue(
            conn,
            message_queue.team_alert(
                self._settings, prefs, event_id=uuid.uuid4(), merchant_id=delivery.merchant_id, alert=alert
            ),
        )


def _stale(delivery: ClaimedDelivery) -> str:
    """This claim's lease ran out and another claim took the delivery over: its result is that claim's to record."""
    log.warning("webhook_stale_result_ignored", delivery=delivery.id, attempt=delivery.attempts)
    return "stale"
