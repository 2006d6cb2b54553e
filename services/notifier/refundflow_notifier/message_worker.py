"""Sends queued messages: emails over SMTP, team alerts to Slack-compatible webhooks.

Exactly once, as far as SMTP allows: a message is marked sent in the transaction right after the server's
250 reply to DATA. A crash between that reply and the commit (one round trip to PostgreSQL) is the one
window in which a message goes out twice; it then carries the same Message-ID, so mail systems can tell.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import structlog
from opentelemetry.trace import SpanKind

from refundflow_notifier import merchant_settings, message_queue, outbound_http
from refundflow_notifier.email_messages import recipient_hash
from refundflow_notifier.notification_rules import undeliverable_email_alert
from refundflow_notifier.retry_schedule import is_success, next_delay
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import MailNotSent, SmtpMailer
from refundflow_shared import tracing
from refundflow_shared.crash_points import crash_point
from refundflow_shared.lease_dispatcher import LeaseDispatcher
from refundflow_shared.metrics import EMAILS
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)

Row = dict[str, Any]


class NotSent(Exception):
    """This attempt failed; ``permanent``: no later attempt would do better. ``str()`` is what the message's
    row records (an SMTP server's answer, say); ``summary`` is what logs show (never an address)."""

    def __init__(self, error: str, *, permanent: bool, summary: str | None = None) -> None:
        super().__init__(error)
        self.permanent, self.summary = permanent, summary or error


class MessageWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: NotifierSettings,
        mailer: SmtpMailer,
        http: httpx.AsyncClient,
        box: SecretBox | None,
    ) -> None:
        self._pool, self._settings, self._mailer, self._http, self._box = pool, settings, mailer, http, box
        deadline = max(settings.smtp_timeout_seconds, settings.webhook_timeout_seconds)
        self._lease = deadline + settings.lease_margin_seconds  # outlives any send

    def dispatcher(self) -> LeaseDispatcher[Row, int]:
        return LeaseDispatcher(
            self._pool,
            channel="notifier_messages",
            claim=lambda limit, busy: message_queue.claim_due(
                self._pool,
                limit,
                busy,
                lease_seconds=self._lease,
                per_merchant=self._settings.message_max_in_flight_per_merchant,
            ),
            key=lambda row: int(row["id"]),
            work=self.send,
            max_in_flight=self._settings.message_concurrency,
            poll_interval=self._settings.message_poll_interval_seconds,
            name="message_worker",
        )

    async def send(self, row: Row) -> None:
        """Send one message in a span continuing the trace that queued it (its log lines carry the trace id)."""
        name = f"{row['channel']} {row['kind']}"
        with tracing.span(name, traceparent=row.get("traceparent"), continues=True, kind=SpanKind.CLIENT):
            await self._send(row)

    async def _send(self, row: Row) -> None:
        crash_point("notifier.message_claimed")
        log_ = log.bind(
            message=row["id"], kind=row["kind"], channel=row["channel"], event_id=str(row["event_id"]),
            merchant_id=row["merchant_id"], recipient=recipient_hash(row["recipient"]),
        )  # fmt: skip
        try:
            if row["channel"] == "email":
                await self._send_email(row)
            else:
                await self._post_slack(row)
        except NotSent as exc:
            if exc.permanent:
                log_.error("message_rejected", error=exc.summary)
                await self._rejected(row, str(exc))
                _count(row, "rejected")
            else:
                _count(row, await self._retry(row, exc, log_))
            return
        crash_point("notifier.message_sent")
        async with self._pool.acquire() as conn:
            await message_queue.finish(conn, row["id"], "sent")
        log_.info("message_sent")
        _count(row, "sent")

    async def _send_email(self, row: Row) -> None:
        try:
            await self._mailer.send(bytes(row["body"]), row["recipient"])
        except MailNotSent as exc:
            raise NotSent(str(exc), permanent=exc.permanent, summary=exc.summary) from exc

    async def _post_slack(self, row: Row) -> None:
        url = self._slack_url(row)
        try:
            status = await outbound_http.post(
                self._http,
                url,
                bytes(row["body"]),
                {"content-type": "application/json", "user-agent": "Refundflow-Alerts/1"},
                deadline=self._settings.webhook_timeout_seconds,
                max_response_bytes=self._settings.webhook_max_response_bytes,
            )
        except outbound_http.CallFailed as exc:
            raise NotSent(exc.category, permanent=exc.category == outbound_http.URL_NOT_ALLOWED) from exc
        if is_success(status):
            return
        retryable = status == 429 or status >= 500
        raise NotSent(outbound_http.http_status_error(status), permanent=not retryable)

    def _slack_url(self, row: Row) -> str:
        sealed = row["sealed_slack_webhook_url"]
        if sealed is None:
            raise NotSent("slack_not_configured", permanent=True)  # removed since the alert was queued
        if self._box is None:
            raise NotSent("slack_url_unreadable", permanent=False)  # WEBHOOK_SECRET_KEY is not set (yet)
        try:
            return self._box.open(sealed, context=row["merchant_id"])
        except SecretBoxError as exc:
            raise NotSent("slack_url_unreadable", permanent=True) from exc

    async def _retry(self, row: Row, failure: NotSent, log_: structlog.stdlib.BoundLogger) -> str:
        """Try again later, or give up: which it was (retrying or failed)."""
        delay = next_delay(self._settings.message_retry_schedule_seconds, row["attempts"])
        if delay is not None:
            log_.warning("message_retrying", attempt=row["attempts"], retry_in=delay, error=failure.summary)
            async with self._pool.acquire() as conn:
                await message_queue.retry_later(conn, row["id"], delay, str(failure))
            return "retrying"
        log_.error("message_failed", attempts=row["attempts"], error=failure.summary)
        await self._rejected(row, f"gave up after {row['attempts']} attempts: {failure}", status="failed")
        return "failed"

    async def _rejected(self, row: Row, error: str, status: str = "rejected") -> None:
        """Record it and tell the team, in one transaction; other messages are not held up."""
        async with self._pool.acquire() as conn, conn.transaction():
            await message_queue.finish(conn, row["id"], status, error)
            if row["kind"] == "team_alert" or row["channel"] == "slack":
                return  # an alert about an alert could loop; the log and the row carry it
            prefs = await merchant_settings.preferences(conn, self._settings, row["merchant_id"])
            alert = undeliverable_email_alert(row["recipient"], row["kind"], error)
            await message_queue.queue_team_alert(
                conn, self._settings, prefs, event_id=uuid.uuid4(), merchant_id=row["merchant_id"], alert=alert
            )


def _count(row: Row, outcome: str) -> None:
    """Emails by kind (a template's name, from the code) and outcome; team channels are not emails."""
    if row["channel"] == "email":
        EMAILS.labels(row["kind"], outcome).inc()
