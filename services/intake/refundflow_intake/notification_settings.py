"""A merchant's team channels and how its customer emails present it: stored here, announced to the notifier.

The Slack webhook URL is a credential (whoever holds it posts into the merchant's channel): it is sealed with
``SecretBox`` (context = merchant id) before it is stored or sent, and never shown in clear again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import NotificationSettingsConfigured
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)

Row = dict[str, Any]
FIELDS = ("team_email", "sender_name", "reply_to", "review_target")
KEEP = object()  # the Slack URL was not given: the saved one stays


async def save_settings(
    conn: asyncpg.Connection, box: SecretBox | None, merchant_id: str, settings: Row, slack_url: str | object | None
) -> Row:
    """Replace the merchant's settings (PUT semantics) and tell the notifier. ``slack_url``: a new URL, None to
    clear it, or KEEP (it cannot be read back, so leaving it out keeps it)."""
    values = [settings.get(name) for name in FIELDS]
    if isinstance(slack_url, str):
        assert box is not None, "a Slack URL is sealed: the caller checks for a key"
        sealed: str | None = box.seal(slack_url, context=merchant_id)
    else:
        sealed = None
    keep = slack_url is KEEP  # the one saved when this write lands, under its row lock: not one read before
    placeholders = ", ".join(f"${i}" for i in range(2, len(FIELDS) + 3))
    row = await conn.fetchrow(
        f"INSERT INTO notification_settings (merchant_id, {', '.join(FIELDS)}, sealed_slack_webhook_url,"
        f" slack_webhook_url) VALUES ($1, {placeholders}, NULL)"
        " ON CONFLICT (merchant_id) DO UPDATE SET "
        + ", ".join(f"{name} = EXCLUDED.{name}" for name in (*FIELDS, "slack_webhook_url"))
        + f", sealed_slack_webhook_url = CASE WHEN ${len(FIELDS) + 3} THEN"
        " notification_settings.sealed_slack_webhook_url ELSE EXCLUDED.sealed_slack_webhook_url END"
        ", updated_at = now() RETURNING *",
        merchant_id,
        *values,
        sealed,
        keep,
    )
    assert row is not None
    await add_event(
        conn,
        NotificationSettingsConfigured(
            merchant_id=merchant_id,
            sealed_slack_webhook_url=row["sealed_slack_webhook_url"],
            **dict(zip(FIELDS, values, strict=True)),
        ),
        source=INTAKE.source,
    )
    return dict(row)


async def get_settings(conn: asyncpg.Connection, merchant_id: str) -> Row:
    row = await conn.fetchrow("SELECT * FROM notification_settings WHERE merchant_id = $1", merchant_id)
    return dict(row) if row else {name: None for name in (*FIELDS, "sealed_slack_webhook_url")}


def masked_url(box: SecretBox | None, merchant_id: str, sealed: str | None) -> str | None:
    """What the merchant sees of a saved Slack URL: that it is set, and its host."""
    if sealed is None:
        return None
    if box is None:
        return "…"
    parts = urlsplit(box.open(sealed, context=merchant_id))
    return f"{parts.scheme}://{parts.hostname}/…"


async def seal_clear_slack_urls(pool: asyncpg.Pool, box: SecretBox | None) -> int:
    """Seal the Slack URLs saved in clear before they were sealed, and announce them sealed (at start-up)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT * FROM notification_settings WHERE slack_webhook_url IS NOT NULL FOR UPDATE")
        if rows and box is None:
            log.error("slack_urls_not_sealed", count=len(rows), why="WEBHOOK_SECRET_KEY is not set")
            return 0
        for row in rows:
            assert box is not None
            settings = {name: row[name] for name in FIELDS}
            await save_settings(conn, box, row["merchant_id"], settings, row["slack_webhook_url"])
    if rows:
        log.info("slack_urls_sealed", count=len(rows))
    return len(rows)
