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
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)

Row = dict[str, Any]
FIELDS = ("team_email", "sender_name", "reply_to", "review_target")
KEEP = object()  # the Slack URL was not given: the saved one stays
UNREADABLE = "unreadable: save it again"  # shown for a saved Slack URL no key of the ring opens


async def save_settings(
    conn: asyncpg.Connection, box: SecretBox | None, merchant_id: str, settings: Row, slack_url: str | object | None
) -> Row:
    """Replace the merchant's settings (PUT semantics) and tell the notifier. ``slack_url``: a new URL, None to
    clear it, or KEEP (it cannot be read back, so leaving it out keeps it)."""
    values = [settings.get(name) for name in FIELDS]
    # The merchant's row first, as a portal switch takes it: the two announce one after the other, each with the
    # other's latest.
    portal_on = await conn.fetchval("SELECT portal_enabled FROM merchants WHERE id = $1 FOR UPDATE", merchant_id)
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
    await _announce(conn, merchant_id, dict(row), portal_on=portal_on)
    return dict(row)


async def announce_portal_switch(conn: asyncpg.Connection, merchant_id: str, *, enabled: bool) -> None:
    """Tell the notifier the merchant switched its portal on or off (with its settings, as every announcement):
    the outcomes the processor publishes later carry the decision's link, which the notifier must leave out.
    The caller has updated (so locked) the merchant's row."""
    await _announce(conn, merchant_id, await get_settings(conn, merchant_id), portal_on=enabled)
    await conn.execute("UPDATE merchants SET portal_switch_unannounced = false WHERE id = $1", merchant_id)


async def announce_earlier_portal_switches(pool: asyncpg.Pool) -> int:
    """Announce the portals switched off before switches were announced (migration 0710 marks them), once, however
    many replicas start together (at start-up); returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, portal_enabled FROM merchants WHERE portal_switch_unannounced ORDER BY id FOR UPDATE"
        )
        for row in rows:
            await announce_portal_switch(conn, row["id"], enabled=row["portal_enabled"])
    if rows:
        log.info("earlier_portal_switches_announced", merchants=len(rows))
    return len(rows)


async def replace_sealed_slack_url(conn: asyncpg.Connection, merchant_id: str, sealed: str) -> None:
    """The same Slack URL, sealed again (under another key), announced with the rest of the settings as they are.
    The caller holds the merchant's row, then the settings' (in that order, as a save takes them)."""
    portal_on = await conn.fetchval("SELECT portal_enabled FROM merchants WHERE id = $1", merchant_id)
    row = await conn.fetchrow(
        "UPDATE notification_settings SET sealed_slack_webhook_url = $2 WHERE merchant_id = $1 RETURNING *",
        merchant_id,
        sealed,
    )
    assert row is not None, "the caller holds the row's lock"
    await _announce(conn, merchant_id, dict(row), portal_on=portal_on)


async def _announce(conn: asyncpg.Connection, merchant_id: str, settings: Row, *, portal_on: bool | None) -> None:
    await add_event(
        conn,
        NotificationSettingsConfigured(
            merchant_id=merchant_id,
            sealed_slack_webhook_url=settings["sealed_slack_webhook_url"],
            portal_enabled=portal_on,
            **{name: settings[name] for name in FIELDS},
        ),
        source=INTAKE.source,
    )


async def get_settings(conn: asyncpg.Connection, merchant_id: str) -> Row:
    row = await conn.fetchrow("SELECT * FROM notification_settings WHERE merchant_id = $1", merchant_id)
    return dict(row) if row else {name: None for name in (*FIELDS, "sealed_slack_webhook_url")}


def masked_url(box: SecretBox | None, merchant_id: str, sealed: str | None) -> str | None:
    """What the merchant sees of a saved Slack URL: that it is set, and its host (or that it must be saved again,
    when the key that sealed it is gone or was replaced)."""
    if sealed is None:
        return None
    if box is None:
        return "…"
    try:
        url = box.open(sealed, context=merchant_id)
    except SecretBoxError as exc:
        log.warning("slack_url_unreadable", merchant_id=merchant_id, error=str(exc))
        return UNREADABLE
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"


async def seal_clear_slack_urls(pool: asyncpg.Pool, box: SecretBox | None) -> int:
    """Seal the Slack URLs saved in clear before they were sealed, and announce them sealed (at start-up)."""
    async with pool.acquire() as conn, conn.transaction():
        # Their merchants' rows first, as a settings save and a portal switch take them: never each waiting on other.
        await conn.execute(
            "SELECT id FROM merchants WHERE id IN (SELECT merchant_id FROM notification_settings"
            " WHERE slack_webhook_url IS NOT NULL) ORDER BY id FOR UPDATE"
        )
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
