"""Delivers queued webhooks over HTTP, signed; retries on the durable schedule, disables dead endpoints.

At least once: a crash after the receiver answered and before the attempt is recorded sends the delivery
again when its lease runs out, with the same ``webhook-id`` so receivers can drop the duplicate.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import structlog

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.notification_rules import endpoint_disabled_alert
from refundflow_notifier.queue_dispatcher import QueueDispatcher, Row
from refundflow_notifier.retry_schedule import disables_endpoint, is_success, next_delay
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.webhook_signing import signed_headers
from refundflow_shared.crash_points import crash_point
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)


class WebhookWorker:
    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings, http: httpx.AsyncClient) -> None:
        self._pool, self._settings, self._http = pool, settings, http
        key = settings.webhook_secret_key
        self._box = SecretBox(key.get_secret_value()) if key else None
        self._lease = settings.webhook_timeout_seconds * 2 + 5  # then a crashed attempt is retried

    def dispatcher(self) -> QueueDispatcher:
        return QueueDispatcher(
            self._pool,
            channel="notifier_webhook_deliveries",
            claim=lambda limit: webhook_store.claim_due(self._pool, limit, self._lease),
            work=self.deliver,
            max_in_flight=self._settings.webhook_max_in_flight,
            poll_interval=self._settings.webhook_poll_interval_seconds,
            name="webhook_worker",
        )

    async def deliver(self, row: Row) -> None:
        log_ = log.bind(delivery=row["id"], endpoint=row["endpoint_id"], event_id=str(row["event_id"]))
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            secret = self._secret(row)
            headers = signed_headers(secret, str(row["event_id"]), attempted_at, row["payload"])
            response = await self._http.post(
                row["url"],
                content=row["payload"].encode(),
                headers=headers,
                timeout=self._settings.webhook_timeout_seconds,
            )
            status_code = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except (httpx.HTTPError, SecretBoxError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = int((time.monotonic() - started) * 1000)
        crash_point("notifier.webhook_answered")
        async with self._pool.acquire() as conn, conn.transaction():
            await webhook_store.record_attempt(
                conn, row["id"], row["attempts"], attempted_at, status_code, latency_ms, error
            )
            await self._settle(conn, row, status_code, error)
        log_.info(
            "webhook_attempted", attempt=row["attempts"], status_code=status_code, latency_ms=latency_ms, error=error
        )

    def _secret(self, row: Row) -> str:
        if self._box is None:
            raise SecretBoxError("WEBHOOK_SECRET_KEY is not set: cannot sign")
        return self._box.open(row["encrypted_secret"], context=row["endpoint_id"])

    async def _settle(self, conn: asyncpg.Connection, row: Row, status_code: int | None, error: str | None) -> None:
        if status_code is not None and is_success(status_code):
            await webhook_store.finish_delivery(conn, row["id"], "succeeded")
            await webhook_store.endpoint_succeeded(conn, row["endpoint_id"])
            return
        if status_code is not None and disables_endpoint(status_code):
            await webhook_store.finish_delivery(conn, row["id"], "failed")
            await self._disable(conn, row, "the endpoint answered 410 Gone")
            return
        delay = next_delay(self._settings.webhook_retry_schedule_seconds, row["attempts"])
        if delay is not None:
            await webhook_store.retry_delivery(conn, row["id"], delay)
            return
        await webhook_store.finish_delivery(conn, row["id"], "failed")
        failures = await webhook_store.endpoint_failed_event(conn, row["endpoint_id"])
        if failures >= self._settings.webhook_disable_after_failed_events:
            await self._disable(conn, row, f"{failures} events in a row could not be delivered")

    async def _disable(self, conn: asyncpg.Connection, row: Row, reason: str) -> None:
        if not await webhook_store.disable_endpoint(conn, row["endpoint_id"], reason):
            return
        log.warning("webhook_endpoint_disabled", endpoint=row["endpoint_id"], reason=reason)
        prefs = await message_queue.merchant_preferences(conn, self._settings, row["merchant_id"])
        alert = endpoint_disabled_alert(row["endpoint_id"], row["url"], reason)
        await message_queue.queue_team_alert(
            conn, self._settings, prefs, event_id=uuid.uuid4(), merchant_id=row["merchant_id"], alert=alert
        )
