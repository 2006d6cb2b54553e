"""The outgoing-message queue (customer emails, team emails, Slack alerts) in PostgreSQL.

Messages are built without I/O (``email``, ``team_alert``) and written by ``queue``, many in one round trip, in the
caller's transaction (the consumer's inbox transaction, or a worker's), so a message is queued exactly once with
the fact it announces; the message worker sends it afterwards. A Slack message names no URL: the merchant's
sealed Slack URL is opened when it is sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from refundflow_notifier.customer_emails import STEP_IN_THE_REFUND
from refundflow_notifier.email_messages import InvalidAddress, build_email, check_address, recipient_reference
from refundflow_notifier.notification_rules import (
    EmailContent,
    MerchantPreferences,
    TeamAlert,
    undeliverable_email_alert,
)
from refundflow_notifier.records import Channel, ClaimedMessage
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.database import transaction_holding
from refundflow_shared.tracing import current_traceparent

log = structlog.get_logger(__name__)

SLACK_RECIPIENT = "slack"  # the merchant's Slack channel, wherever its (sealed) URL points


@dataclass(frozen=True)
class QueuedMessage:
    """One message to queue, as ``queue`` writes it; it continues the trace it was built in."""

    event_id: uuid.UUID
    merchant_id: str
    channel: Channel
    kind: str
    recipient: str
    body: bytes | None
    refund_id: str | None = None
    message_id: str | None = None
    status: str = "pending"
    error: str | None = None
    traceparent: str | None = field(default_factory=current_traceparent)
    # Queued while the email that comes before it in its refund's order (to its recipient), at step
    # ``waits_for_step``, is not, it is due only this much later (or once that one is queued): see
    # ``customer_emails.step_it_follows``.
    waits_for_step: int | None = None
    wait_for_earlier_seconds: float = 0.0

    @property
    def dedupe_key(self) -> str:
        return f"{self.event_id}/{self.kind}/{self.recipient}"

    @property
    def refund_step(self) -> int | None:
        """Where it comes among its recipient's messages about its refund (None: in no such order)."""
        return STEP_IN_THE_REFUND.get(self.kind) if self.refund_id is not None else None


def email(
    settings: NotifierSettings,
    prefs: MerchantPreferences,
    *,
    event_id: uuid.UUID,
    merchant_id: str,
    recipient: str,
    content: EmailContent,
    refund_id: str | None = None,
    follows_step: int | None = None,
) -> list[QueuedMessage]:
    """One email to queue; for an address no server would take, the email kept as rejected and the team's alert.
    ``follows_step``: it waits a while for the email at that step of its refund's order, when that one is not queued.
    """
    try:
        check_address(recipient)
    except InvalidAddress as exc:
        log.error(
            "email_rejected", kind=content.kind, recipient=recipient_reference(recipient, settings), error=str(exc)
        )
        rejected = QueuedMessage(
            event_id,
            merchant_id,
            Channel.EMAIL,
            content.kind,
            recipient,
            None,
            refund_id,
            status="rejected",
            error=str(exc),
        )
        if content.kind == "team_alert":  # never alert about an alert: that could loop
            return [rejected]
        alert = undeliverable_email_alert(recipient, content.kind, str(exc))
        return [rejected, *team_alert(settings, prefs, event_id=uuid.uuid4(), merchant_id=merchant_id, alert=alert)]
    message = build_email(event_id, content, mail_from=settings.mail_from, prefs=prefs, recipient=recipient)
    return [
        QueuedMessage(
            event_id,
            merchant_id,
            Channel.EMAIL,
            content.kind,
            recipient,
            message.data,
            refund_id,
            message_id=message.message_id,
            waits_for_step=follows_step,
            wait_for_earlier_seconds=settings.email_order_wait_seconds if follows_step is not None else 0,
        )
    ]


def team_alert(
    settings: NotifierSettings,
    prefs: MerchantPreferences,
    *,
    event_id: uuid.UUID,
    merchant_id: str,
    alert: TeamAlert,
) -> list[QueuedMessage]:
    """The messages to queue for an alert: to the merchant's Slack-compatible webhook and/or team email, whichever it
    configured."""
    messages = []
    if prefs.has_slack:
        body = json.dumps({"text": alert.slack_text()}).encode()
        messages.append(QueuedMessage(event_id, merchant_id, Channel.SLACK, alert.kind, SLACK_RECIPIENT, body))
    if prefs.team_email:
        content = EmailContent(
            "team_alert",
            f"[Refundflow] {alert.title}",
            {"title": alert.title, "details": alert.details},
            audience="team",
        )
        # From Refundflow itself, with no Reply-To: the merchant's sender name and Reply-To (its support desk) are
        # for its customers, and a team member's reply to an alert must not reach them.
        platform = MerchantPreferences(review_target=prefs.review_target)
        messages += email(
            settings, platform, event_id=event_id, merchant_id=merchant_id, recipient=prefs.team_email, content=content
        )
    if not messages:
        log.info("team_alert_unrouted", kind=alert.kind, merchant_id=merchant_id)
    return messages


async def queue(conn: asyncpg.Connection, messages: Sequence[QueuedMessage]) -> None:
    """Queue ``messages`` in the caller's transaction, in one round trip, in order; one already queued (the same
    event, kind and recipient) stays as it is."""
    if not messages:
        return
    await conn.execute(_QUEUE, *zip(*(_row(m) for m in messages), strict=True))


def _row(m: QueuedMessage) -> tuple[object, ...]:
    return (
        m.dedupe_key, m.event_id, m.merchant_id, m.channel.value, m.kind, m.recipient, m.message_id, m.body,
        m.refund_id, m.refund_step, m.status, m.error, m.traceparent, m.waits_for_step, m.wait_for_earlier_seconds,
    )  # fmt: skip


# A message that waits for one before it in its refund's order (at ``waits_for_step``: "received" before "approved",
# "approved" before "on its way", which an earlier "received" does not stand in for) is due later when that one is
# not queued, neither before nor in this batch; one queued here makes those waiting for its step due now (they then
# wait behind it, in the claim). Each array is read through a sub-select, as in ``webhook_store``: given the
# arrays themselves, the planner counts their elements and plans every call anew (0.4 ms of its CPU each).
_QUEUE = """
WITH given AS (
    SELECT * FROM unnest((SELECT $1::text[]), (SELECT $2::uuid[]), (SELECT $3::text[]), (SELECT $4::text[]),
        (SELECT $5::text[]), (SELECT $6::text[]), (SELECT $7::text[]), (SELECT $8::bytea[]), (SELECT $9::text[]),
        (SELECT $10::smallint[]), (SELECT $11::text[]), (SELECT $12::text[]), (SELECT $13::text[]),
        (SELECT $14::smallint[]), (SELECT $15::float8[]))
        WITH ORDINALITY AS g(dedupe_key, event_id, merchant_id, channel, kind, recipient, message_id, body,
        refund_id, refund_step, status, error, traceparent, waits_for_step, wait_for_earlier, position)
), came AS (
    UPDATE messages w SET next_attempt_at = now()
    FROM given g
    WHERE w.refund_id = g.refund_id AND w.recipient = g.recipient AND w.status = 'pending'
      AND w.waits_for_step = g.refund_step AND w.attempts = 0 AND w.next_attempt_at > now()
)
INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, message_id, body, refund_id,
    refund_step, status, error, finished_at, traceparent, waits_for_step, next_attempt_at)
SELECT dedupe_key, event_id, merchant_id, channel, kind, recipient, message_id, body, refund_id, refund_step,
    status, error, CASE WHEN status <> 'pending' THEN now() END, traceparent, waits_for_step,
    CASE WHEN g.wait_for_earlier > 0 AND g.waits_for_step IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM messages e
                          WHERE e.refund_id = g.refund_id AND e.recipient = g.recipient
                            AND e.refund_step = g.waits_for_step)
          AND NOT EXISTS (SELECT 1 FROM given e
                          WHERE e.refund_id = g.refund_id AND e.recipient = g.recipient
                            AND e.refund_step = g.waits_for_step)
         THEN now() + make_interval(secs => g.wait_for_earlier) ELSE now() END
FROM given g
ORDER BY position
ON CONFLICT (dedupe_key) DO NOTHING
"""


# What a claim returns, as ``_claimed`` reads it.
_CLAIMED_COLUMNS = """
    m.id, m.event_id, m.merchant_id, m.channel, m.kind, m.recipient, m.body, m.attempts, m.traceparent,
    (SELECT s.sealed_slack_webhook_url FROM merchant_settings s
     WHERE s.merchant_id = m.merchant_id AND m.channel = 'slack') AS sealed_slack_webhook_url"""

# Due messages, fairly: each merchant's earliest, up to its free slots (its cap minus those in flight, leased here
# or by another notifier), each merchant's first before anyone's second; so one merchant's slow Slack or bulk of
# emails cannot take every slot. A message waits while one before it in its refund's order, to the same recipient,
# is pending (out, or due again later): so "on its way" never overtakes "approved". Merchants with pending messages
# are found by a loose index scan (one probe each), so a claim costs no more for one merchant's large backlog. The
# advisory lock makes the caps hold across notifiers.
_CLAIM = f"""
WITH RECURSIVE merchants_with_work(merchant_id) AS (
    (SELECT merchant_id FROM messages WHERE status = 'pending' ORDER BY merchant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.merchant_id FROM messages m
            WHERE m.status = 'pending' AND m.merchant_id > w.merchant_id ORDER BY m.merchant_id LIMIT 1)
    FROM merchants_with_work w WHERE w.merchant_id IS NOT NULL
), candidates AS (
    SELECT c.id, c.next_attempt_at, c.slot
    FROM merchants_with_work w CROSS JOIN LATERAL (
        SELECT m.id, m.next_attempt_at, row_number() OVER (ORDER BY m.next_attempt_at, m.id) AS slot
        FROM messages m
        WHERE m.merchant_id = w.merchant_id AND m.status = 'pending' AND m.next_attempt_at <= now()
          AND (m.locked_until IS NULL OR m.locked_until <= now()) AND m.id <> ALL($3::bigint[])
          AND NOT EXISTS (
              SELECT 1 FROM messages e
              WHERE e.refund_id = m.refund_id AND e.recipient = m.recipient AND e.status = 'pending'
                AND (e.refund_step, e.id) < (m.refund_step, m.id)
          )
        ORDER BY m.next_attempt_at, m.id
        LIMIT greatest(0, $4 - (
            SELECT count(*) FROM messages f
            WHERE f.merchant_id = w.merchant_id AND f.status = 'pending'
              AND f.locked_until IS NOT NULL AND f.locked_until > now()
        ))
    ) c
), picked AS (
    SELECT id FROM candidates ORDER BY slot, next_attempt_at, id LIMIT $1
)
UPDATE messages m SET locked_until = now() + make_interval(secs => $2), attempts = m.attempts + 1
FROM picked
WHERE m.id = picked.id
RETURNING {_CLAIMED_COLUMNS}
"""


def _claimed(row: asyncpg.Record) -> ClaimedMessage:
    return ClaimedMessage(
        id=row["id"],
        event_id=row["event_id"],
        merchant_id=row["merchant_id"],
        channel=Channel(row["channel"]),
        kind=row["kind"],
        recipient=row["recipient"],
        body=row["body"],
        attempts=row["attempts"],
        traceparent=row["traceparent"],
        sealed_slack_webhook_url=row["sealed_slack_webhook_url"],
    )


async def claim_due(
    pool: asyncpg.Pool, limit: int, busy: list[int], *, lease_seconds: float, per_merchant: int
) -> list[ClaimedMessage]:
    """Lease due messages (none of ``busy``): a crashed sender's lease runs out and the message is sent again."""
    async with pool.acquire() as conn, transaction_holding(conn, "notifier.message_claim"):
        return [_claimed(r) for r in await conn.fetch(_CLAIM, limit, lease_seconds, busy, per_merchant)]


async def finish(
    conn: asyncpg.Connection, messages: Sequence[ClaimedMessage], status: str, error: str | None = None
) -> list[int]:
    """The messages are done: keep the record, wipe the rendered content (personal data, no longer needed). Returns
    the ids it finished. A message that went out is sent whichever claim sent it; any other end holds only for the
    claim the message is still leased to (a worker whose lease ran out cannot undo what the claim after it did)."""
    rows = await conn.fetch(
        "UPDATE messages m SET status = $3, error = $4, locked_until = NULL, body = NULL, finished_at = now(),"
        " sent_at = CASE WHEN $3 = 'sent' THEN now() END"
        " FROM unnest($1::bigint[], $2::int[]) AS c(id, attempts)"
        " WHERE m.id = c.id AND m.status = 'pending' AND ($3 = 'sent' OR m.attempts = c.attempts) RETURNING m.id",
        [m.id for m in messages],
        [m.attempts for m in messages],
        status,
        error,
    )
    return [r["id"] for r in rows]


async def retry_later(conn: asyncpg.Connection, message: ClaimedMessage, delay_seconds: float, error: str) -> bool:
    """Try it again later, unless the message is no longer this claim's (False); the messages waiting behind it (its
    refund's next, to its recipient) are due no sooner, so a claim passes over them in the index instead of row by
    row (a mail server down for an hour holds many)."""
    retried: int = await conn.fetchval(
        "WITH retried AS ("
        " UPDATE messages SET next_attempt_at = now() + make_interval(secs => $2), locked_until = NULL, error = $3"
        " WHERE id = $1 AND status = 'pending' AND attempts = $4"
        " RETURNING id, refund_id, recipient, refund_step, next_attempt_at), behind AS ("
        " UPDATE messages m SET next_attempt_at = r.next_attempt_at FROM retried r"
        " WHERE m.refund_id = r.refund_id AND m.recipient = r.recipient AND m.status = 'pending'"
        " AND (m.refund_step, m.id) > (r.refund_step, r.id) AND m.next_attempt_at < r.next_attempt_at)"
        " SELECT count(*) FROM retried",
        message.id,
        delay_seconds,
        error,
        message.attempts,
    )
    return retried > 0


async def put_back(conn: asyncpg.Connection, message: ClaimedMessage, error: str) -> bool:
    """Untried after all: the SMTP relay was away or refused us. Due as it was, the claim's attempt not counted (a
    relay's outage is no reason to give a message up); False when the message is no longer this claim's."""
    put_back: str = await conn.execute(
        "UPDATE messages SET attempts = attempts - 1, locked_until = NULL, error = $2"
        " WHERE id = $1 AND status = 'pending' AND attempts = $3",
        message.id,
        error,
        message.attempts,
    )
    return put_back != "UPDATE 0"
