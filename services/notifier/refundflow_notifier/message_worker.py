"""Sends queued messages: emails over SMTP, team alerts to Slack-compatible webhooks.

Exactly once, as far as SMTP allows: a message is marked sent in the transaction right after the server's
250 reply to DATA. A crash between that reply and the commit (one round trip to PostgreSQL) is the one
window in which a message goes out twice; it then carries the same Message-ID, so mail systems can tell.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import structlog

from refundflow_notifier import message_queue
from refundflow_notifier.notification_rules import undeliverable_email_alert
from refundflow_notifier.queue_dispatcher import QueueDispatcher, Row
from refundflow_notifier.retry_schedule import is_success, next_delay
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import RecipientRejected, SmtpMailer
from refundflow_shared.consumer import TransientError
from refundflow_shared.crash_points import crash_point

log = structlog.get_logger(__name__)


class PermanentFailure(Exception):
    """The receiving side refused the message for good."""


class MessageWorker:
    def __init__(
        self, pool: asyncpg.Pool, settings: NotifierSettings, mailer: SmtpMailer, http: httpx.AsyncClient
    ) -> None:
        self._pool, self._settings, self._mailer, self._http = pool, settings, mailer, http
        self._lease = settings.smtp_timeout_seconds * 3 + 5

    def dispatcher(self) -> QueueDispatcher:
        return QueueDispatcher(
            self._pool,
            channel="notifier_messages",
            claim=lambda limit: message_queue.claim_due(self._pool, limit, self._lease),
            work=self.send,
            max_in_flight=self._settings.message_concurrency,
            poll_interval=self._settings.message_poll_interval_seconds,
            name="message_worker",
        )

    async def send(self, row: Row) -> None:
        crash_point("notifier.message_claimed")
        log_ = log.bind(message=row["id"], kind=row["kind"], channel=row["channel"], event_id=str(row["event_id"]))
        try:
            if row["channel"] == "email":
                await self._send_email(row)
            else:
                await self._post_slack(row)
        except (RecipientRejected, PermanentFailure) as exc:
            log_.error("message_rejected", error=str(exc))
            await self._rejected(row, str(exc))
            return
        except (TransientError, httpx.TransportError) as exc:
            await self._retry(row, repr(exc), log_)
            return
        crash_point("notifier.message_sent")
        async with self._pool.acquire() as conn:
            await message_queue.finish(conn, row["id"], "sent")
        log_.info("message_sent")

    async def _send_email(self, row: Row) -> None:
        await self._mailer.send(bytes(row["body"]), row["recipient"])

    async def _post_slack(self, row: Row) -> None:
        response = await self._http.post(
            row["recipient"],
            content=bytes(row["body"]),
            headers={"Content-Type": "application/json"},
            timeout=self._settings.webhook_timeout_seconds,
        )
        if is_success(response.status_code):
            return
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}")
        raise PermanentFailure(f"HTTP {response.status_code}: {response.text[:200]}")

    async def _retry(self, row: Row, error: str, log_: structlog.stdlib.BoundLogger) -> None:
        delay = next_delay(self._settings.message_retry_schedule_seconds, row["attempts"])
        if delay is not None:
            log_.warning("message_retrying", attempt=row["attempts"], retry_in=delay, error=error)
            async with self._pool.acquire() as conn:
                await message_queue.retry_later(conn, row["id"], delay, error)
            return
        log_.error("message_failed", attempts=row["attempts"], error=error)
        await self._rejected(row, f"gave up after {row['attempts']} attempts: {error}", status="failed")

    async def _rejected(self, row: Row, error: str, status: str = "rejected") -> None:
        """Record it and tell the team, in one transaction; other messages are not held up."""
        async with self._pool.acquire() as conn, conn.transaction():
            await message_queue.finish(conn, row["id"], status, error)
            if row["kind"] in ("team_alert",) or row["channel"] == "slack":
                return  # an alert about an alert could loop; the log and the row carry it
            prefs = await message_queue.merchant_preferences(conn, self._settings, row["merchant_id"])
            alert = undeliverable_email_alert(row["recipient"], row["kind"], error)
            await message_queue.queue_team_alert(
                conn, self._settings, prefs, event_id=uuid.uuid4(), merchant_id=row["merchant_id"], alert=alert
            )
