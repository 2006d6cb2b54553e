"""Sends queued messages: emails over SMTP, team alerts to Slack-compatible webhooks.

Exactly once, as far as SMTP allows: a message is marked sent right after the server's 250 reply to DATA, in
one statement with the other messages sent meanwhile (``GroupCommit``), written again while the database is away. A
crash between that reply and the commit (a round trip to PostgreSQL, or two under load) is the one window in which
a message goes out twice; it then carries the same Message-ID, so mail systems can tell.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import asyncpg
import structlog
from opentelemetry.trace import SpanKind

from refundflow_notifier import merchant_settings, message_queue, outbound_http
from refundflow_notifier.email_messages import dated, recipient_reference
from refundflow_notifier.notification_rules import undeliverable_email_alert
from refundflow_notifier.records import Channel, ClaimedMessage
from refundflow_notifier.relay_pause import RelayPause
from refundflow_notifier.retry_schedule import is_success, next_delay
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_answers import Fault
from refundflow_notifier.smtp_mailer import MailNotSent, SmtpMailer
from refundflow_shared import tracing
from refundflow_shared.crash_points import crash_point
from refundflow_shared.group_commit import GroupCommit
from refundflow_shared.lease_dispatcher import LeaseDispatcher, recorded
from refundflow_shared.metrics import EMAILS
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class NotSent(Exception):
    """This attempt failed; ``permanent``: no later attempt would do better; ``relay``: the SMTP relay failed us,
    not the message (nothing to spend its attempts on). ``str()`` is what the message's row records (an SMTP
    server's answer, say); ``summary`` is what logs show (never an address)."""

    def __init__(self, error: str, *, permanent: bool, summary: str | None = None, relay: bool = False) -> None:
        super().__init__(error)
        self.permanent, self.summary, self.relay = permanent, summary or error, relay


class MessageWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: NotifierSettings,
        mailer: SmtpMailer,
        http: aiohttp.ClientSession,
        box: SecretBox | None,
    ) -> None:
        self._pool, self._settings, self._mailer, self._http, self._box = pool, settings, mailer, http, box
        deadline = max(settings.smtp_timeout_seconds, settings.webhook_timeout_seconds)
        self._lease = deadline + settings.lease_margin_seconds  # outlives any send
        self._sent: GroupCommit[ClaimedMessage] = GroupCommit(self._mark_sent)
        self.relay_pause = RelayPause()  # one per process: its sends all go through the one relay

    def dispatcher(self) -> LeaseDispatcher[ClaimedMessage, int]:
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
            key=lambda message: message.id,
            work=self.send,
            max_in_flight=self._settings.message_concurrency,
            poll_interval=self._settings.message_poll_interval_seconds,
            name="message_worker",
            paused=self.relay_pause.remaining,  # Slack alerts wait too: the pause is a minute at most
            gather_seconds=self._settings.delivery_gather_ms / 1000,
            shutdown_grace=self._lease,  # a send and its record finish before the deploy goes on
        )

    async def send(self, message: ClaimedMessage) -> None:
        """Send one message in a span continuing the trace that queued it (its log lines carry the trace id)."""
        name = f"{message.channel} {message.kind}"
        with tracing.span(name, traceparent=message.traceparent, continues=True, kind=SpanKind.CLIENT):
            await self._send(message)

    async def _send(self, message: ClaimedMessage) -> None:
        crash_point("notifier.message_claimed")
        log_ = log.bind(
            message=message.id, kind=message.kind, channel=message.channel, event_id=str(message.event_id),
            merchant_id=message.merchant_id, recipient=recipient_reference(message.recipient, self._settings),
        )  # fmt: skip
        try:
            if message.channel == Channel.EMAIL:
                await self._send_email(message)
            else:
                await self._post_slack(message)
        except NotSent as exc:
            if exc.relay:
                _count(message, await self._wait_for_relay(message, exc, log_))
            elif exc.permanent:
                log_.error("message_rejected", error=exc.summary)
                _count(message, "rejected" if await self._rejected(message, str(exc)) else _stale(message, log_))
            else:
                _count(message, await self._retry(message, exc, log_))
            return
        crash_point("notifier.message_sent")
        await self._recorded(lambda: self._sent.write(message))
        log_.info("message_sent")
        if message.channel == Channel.EMAIL and self.relay_pause.clear():
            log.info("smtp_relay_recovered")
        _count(message, "sent")

    async def _mark_sent(self, messages: list[ClaimedMessage]) -> None:
        async with self._pool.acquire() as conn:
            await message_queue.finish(conn, messages, "sent")

    async def _send_email(self, message: ClaimedMessage) -> None:
        try:
            await self._mailer.send(dated(message.body), message.recipient)
        except MailNotSent as exc:
            fault = exc.fault
            if (
                fault is Fault.RELAY
                and exc.stage == "recipient"
                and self.relay_pause.refuses_only_this_address(message.id)
            ):
                fault = Fault.REJECTED
            permanent, relay = fault is Fault.REJECTED, fault is Fault.RELAY
            raise NotSent(str(exc), permanent=permanent, summary=exc.summary, relay=relay) from exc

    async def _post_slack(self, message: ClaimedMessage) -> None:
        url = self._slack_url(message)
        try:
            answer = await outbound_http.post(
                self._http,
                url,
                message.body,
                {"content-type": "application/json", "user-agent": "Refundflow-Alerts/1"},
                deadline=self._settings.webhook_timeout_seconds,
                max_response_bytes=self._settings.webhook_max_response_bytes,
            )
        except outbound_http.CallFailed as exc:
            raise NotSent(exc.category, permanent=exc.category == outbound_http.URL_NOT_ALLOWED) from exc
        if is_success(answer.status):
            return  # Slack took the alert, whatever followed the status: sending it again would post it twice
        retryable = answer.status == 429 or answer.status >= 500
        raise NotSent(outbound_http.http_status_error(answer.status), permanent=not retryable)

    def _slack_url(self, message: ClaimedMessage) -> str:
        sealed = message.sealed_slack_webhook_url
        if sealed is None:
            raise NotSent("slack_not_configured", permanent=True)  # removed since the alert was queued
        if self._box is None:
            raise NotSent("slack_url_unreadable", permanent=False)  # WEBHOOK_SECRET_KEY is not set (yet)
        try:
            return self._box.open(sealed, context=message.merchant_id)
        except SecretBoxError as exc:
            raise NotSent("slack_url_unreadable", permanent=True) from exc

    async def _wait_for_relay(
        self, message: ClaimedMessage, failure: NotSent, log_: structlog.stdlib.BoundLogger
    ) -> str:
        """Pause sending and put the message back untried: an outage of any length gives no message up. Logged once
        per pause, not per message (an outage fails every message in flight)."""
        pause = self.relay_pause.trip()
        if pause is not None:
            log.error("smtp_relay_unavailable", error=failure.summary, sending_paused_for=pause)
        if not await self._recorded(lambda: self._put_back(message, str(failure))):
            return _stale(message, log_)
        return "waiting_for_relay"

    async def _put_back(self, message: ClaimedMessage, error: str) -> bool:
        async with self._pool.acquire() as conn:
            return await message_queue.put_back(conn, message, error)

    async def _retry(self, message: ClaimedMessage, failure: NotSent, log_: structlog.stdlib.BoundLogger) -> str:
        """Try again later, or give up: which it was (retrying or failed)."""
        delay = next_delay(self._settings.message_retry_schedule_seconds, message.attempts)
        if delay is not None:
            log_.warning("message_retrying", attempt=message.attempts, retry_in=delay, error=failure.summary)
            if not await self._recorded(lambda: self._retry_later(message, delay, str(failure))):
                return _stale(message, log_)
            return "retrying"
        log_.error("message_failed", attempts=message.attempts, error=failure.summary)
        if not await self._rejected(message, f"gave up after {message.attempts} attempts: {failure}", "failed"):
            return _stale(message, log_)
        return "failed"

    async def _retry_later(self, message: ClaimedMessage, delay: float, error: str) -> bool:
        async with self._pool.acquire() as conn:
            return await message_queue.retry_later(conn, message, delay, error)

    async def _recorded(self, record: Callable[[], Awaitable[T]]) -> T:
        """A record of what a send did, retried while the database is away: a blip never sends a message again."""
        return await recorded(record, name="message_worker", settings=self._settings)

    async def _rejected(self, message: ClaimedMessage, error: str, status: str = "rejected") -> bool:
        """Record it and tell the team, in one transaction; other messages are not held up. False when the message
        is another claim's by now (this one's lease ran out): nothing recorded, nobody told."""
        return await self._recorded(lambda: self._record_rejected(message, error, status))

    async def _record_rejected(self, message: ClaimedMessage, error: str, status: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await message_queue.finish(conn, [message], status, error):
                return False
            if message.kind == "team_alert" or message.channel == Channel.SLACK:
                return True  # an alert about an alert could loop; the log and the row carry it
            prefs = await merchant_settings.preferences(conn, self._settings, message.merchant_id)
            alert = undeliverable_email_alert(message.recipient, message.kind, error)
            await message_queue.queue(
                conn,
                message_queue.team_alert(
                    self._settings, prefs, event_id=uuid.uuid4(), merchant_id=message.merchant_id, alert=alert
                ),
            )
        return True


def _stale(message: ClaimedMessage, log_: structlog.stdlib.BoundLogger) -> str:
    """This claim's lease ran out and another claim took the message over: its result is that claim's to record."""
    log_.warning("message_stale_result_ignored", attempt=message.attempts)
    return "stale"


def _count(message: ClaimedMessage, outcome: str) -> None:
    """Emails by kind (a template's name, from the code) and outcome; team channels are not emails."""
    if message.channel == Channel.EMAIL:
        EMAILS.labels(message.kind, outcome).inc()
