"""The outgoing-message queue (customer emails, team emails, Slack alerts) in PostgreSQL.

Rows are written in the caller's transaction (the consumer's inbox transaction, or a worker's), so a message
is queued exactly once with the fact it announces; the message worker sends it afterwards.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import structlog

from refundflow_notifier.email_messages import InvalidAddress, build_email, check_address
from refundflow_notifier.notification_rules import (
    EmailContent,
    MerchantPreferences,
    TeamAlert,
    undeliverable_email_alert,
)
from refundflow_notifier.settings import NotifierSettings

log = structlog.get_logger(__name__)


async def merchant_preferences(
    conn: asyncpg.Connection, settings: NotifierSettings, merchant_id: str
) -> MerchantPreferences:
    row = await conn.fetchrow("SELECT * FROM merchant_settings WHERE merchant_id = $1", merchant_id)
    return MerchantPreferences(
        review_target=(row and row["review_target"]) or settings.review_target,
        refund_process_time=(row and row["refund_process_time"]) or settings.refund_process_time,
        sender_name=row and row["sender_name"],
        reply_to=row and row["reply_to"],
        team_email=row and row["team_email"],
        slack_webhook_url=row and row["slack_webhook_url"],
    )


async def queue_email(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    prefs: MerchantPreferences,
    *,
    event_id: uuid.UUID,
    merchant_id: str,
    recipient: str,
    content: EmailContent,
    refund_id: str | None = None,
) -> None:
    """Queue one email; an address no server would take is recorded as rejected and alerted instead."""
    try:
        check_address(recipient)
    except InvalidAddress as exc:
        await _insert(
            conn,
            event_id,
            merchant_id,
            "email",
            content.kind,
            recipient,
            b"",
            refund_id,
            status="rejected",
            error=str(exc),
        )
        log.error("email_rejected", kind=content.kind, error=str(exc))
        if content.kind != "team_alert":  # never alert about an alert: that could loop
            alert = undeliverable_email_alert(recipient, content.kind, str(exc))
            await queue_team_alert(conn, settings, prefs, event_id=uuid.uuid4(), merchant_id=merchant_id, alert=alert)
        return
    message = build_email(event_id, content, mail_from=settings.mail_from, prefs=prefs, recipient=recipient)
    await _insert(
        conn,
        event_id,
        merchant_id,
        "email",
        content.kind,
        recipient,
        message.as_bytes(),
        refund_id,
        message_id=message["Message-ID"],
    )


async def queue_team_alert(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    prefs: MerchantPreferences,
    *,
    event_id: uuid.UUID,
    merchant_id: str,
    alert: TeamAlert,
) -> None:
    """To the merchant's Slack-compatible webhook and/or team email, whichever it configured."""
    if prefs.slack_webhook_url:
        body = json.dumps({"text": alert.text()}).encode()
        await _insert(conn, event_id, merchant_id, "slack", alert.kind, prefs.slack_webhook_url, body, None)
    if prefs.team_email:
        content = EmailContent(
            "team_alert", f"[Refundflow] {alert.title}", {"title": alert.title, "details": alert.details}
        )
        await queue_email(
            conn,
            settings,
            prefs,
            event_id=event_id,
            merchant_id=merchant_id,
            recipient=prefs.team_email,
            content=content,
        )
    if not (prefs.slack_webhook_url or prefs.team_email):
        log.info("team_alert_unrouted", kind=alert.kind, merchant_id=merchant_id)


async def _insert(
    conn: asyncpg.Connection,
    event_id: uuid.UUID,
    merchant_id: str,
    channel: str,
    kind: str,
    recipient: str,
    body: bytes,
    refund_id: str | None,
    *,
    message_id: str | None = None,
    status: str = "pending",
    error: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, message_id, body,"
        " refund_id, status, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        f"{event_id}/{kind}/{recipient}",
        event_id,
        merchant_id,
        channel,
        kind,
        recipient,
        message_id,
        body,
        refund_id,
        status,
        error,
    )


_CLAIM = """
UPDATE messages m SET locked_until = now() + make_interval(secs => $2), attempts = m.attempts + 1
FROM (
    SELECT id FROM messages
    WHERE status = 'pending' AND next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
    ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
) due
WHERE m.id = due.id
RETURNING m.id, m.event_id, m.merchant_id, m.channel, m.kind, m.recipient, m.body, m.attempts
"""


async def claim_due(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
    """Lease due messages: a crashed sender's lease runs out and the message is sent again."""
    return [dict(r) for r in await pool.fetch(_CLAIM, limit, lease_seconds)]


async def finish(conn: asyncpg.Connection, message_id: int, status: str, error: str | None = None) -> None:
    await conn.execute(
        "UPDATE messages SET status = $2, error = $3, locked_until = NULL,"
        " sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
        message_id,
        status,
        error,
    )


async def retry_later(conn: asyncpg.Connection, message_id: int, delay_seconds: float, error: str) -> None:
    await conn.execute(
        "UPDATE messages SET next_attempt_at = now() + make_interval(secs => $2), locked_until = NULL, error = $3"
        " WHERE id = $1",
        message_id,
        delay_seconds,
        error,
    )
