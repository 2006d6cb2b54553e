"""SQL for merchants' notification settings: team channels and how customer emails present the merchant.

The Slack webhook URL is a credential: it arrives sealed (``SecretBox``, bound to the merchant id), rests
sealed, and is opened only by the message worker, to send.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from refundflow_notifier.notification_rules import MerchantPreferences
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.events import NotificationSettingsConfigured
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)

# More than intake replicas' clocks differ: announcements closer in time than this are ordered by their numbers.
CLOCK_MARGIN = "5 minutes"


async def save(conn: asyncpg.Connection, data: NotificationSettingsConfigured, *, at: datetime, sequence: int) -> bool:
    """The settings as announced (True), unless a later announcement is already here (False): a dead letter replayed
    late is older than what was handled since. Within ``CLOCK_MARGIN`` of the held one's time, intake's number for the
    merchant decides (``sequence``: commit order, whichever replica's clock stamped the event; the same number again
    is a failover's or the same event's); beyond it, the time does: a restore of intake's database restarts its
    numbers from the backup's. A portal switch not said (an intake from before it said) stays as it was."""
    status = await conn.execute(
        "INSERT INTO merchant_settings (merchant_id, team_email, sealed_slack_webhook_url, sender_name, reply_to,"
        " review_target, portal_enabled, announced_at, announced_sequence)"
        " VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, true), $8, $9)"
        " ON CONFLICT (merchant_id) DO UPDATE SET team_email = EXCLUDED.team_email,"
        " sealed_slack_webhook_url = EXCLUDED.sealed_slack_webhook_url, legacy_slack_webhook_url = NULL,"
        " sender_name = EXCLUDED.sender_name, reply_to = EXCLUDED.reply_to,"
        " review_target = EXCLUDED.review_target,"
        " portal_enabled = coalesce($7, merchant_settings.portal_enabled),"
        " announced_at = EXCLUDED.announced_at, announced_sequence = EXCLUDED.announced_sequence, updated_at = now()"
        f" WHERE EXCLUDED.announced_at > merchant_settings.announced_at + interval '{CLOCK_MARGIN}'"
        f" OR (EXCLUDED.announced_at >= merchant_settings.announced_at - interval '{CLOCK_MARGIN}'"
        " AND EXCLUDED.announced_sequence >= merchant_settings.announced_sequence)",
        data.merchant_id,
        data.team_email,
        data.sealed_slack_webhook_url,
        data.sender_name,
        data.reply_to,
        data.review_target,
        data.portal_enabled,
        at,
        sequence,
    )
    if status == "INSERT 0 0":
        log.info("older_settings_ignored", merchant_id=data.merchant_id, sequence=sequence)
        return False
    return True


# What ``preferences_from`` reads of a merchant's row (a join may read them with other things).
PREFERENCE_COLUMNS = "review_target, sender_name, reply_to, team_email, sealed_slack_webhook_url, portal_enabled"


async def preferences(conn: asyncpg.Connection, settings: NotifierSettings, merchant_id: str) -> MerchantPreferences:
    """The merchant's settings with the notifier's defaults filled in."""
    row = await conn.fetchrow(f"SELECT {PREFERENCE_COLUMNS} FROM merchant_settings WHERE merchant_id = $1", merchant_id)
    return preferences_from(settings, row)


def preferences_from(settings: NotifierSettings, row: asyncpg.Record | None) -> MerchantPreferences:
    """``PREFERENCE_COLUMNS`` of a merchant's row (None, or all None, when it set nothing), defaults filled in."""
    return MerchantPreferences(
        review_target=(row and row["review_target"]) or settings.review_target,
        sender_name=row and row["sender_name"],
        reply_to=row and row["reply_to"],
        team_email=row and row["team_email"],
        has_slack=bool(row and row["sealed_slack_webhook_url"]),
        portal_enabled=row is None or row["portal_enabled"] is not False,  # no row: intake never said it is off
    )


async def seal_legacy_slack_urls(pool: asyncpg.Pool, box: SecretBox | None) -> int:
    """Seal Slack URLs stored in clear before they travelled sealed (migration 0003); returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT merchant_id, legacy_slack_webhook_url FROM merchant_settings"
            " WHERE legacy_slack_webhook_url IS NOT NULL FOR UPDATE"
        )
        if rows and box is None:
            log.warning("slack_urls_left_unsealed", merchants=len(rows), why="WEBHOOK_SECRET_KEY is not set")
            return 0
        for row in rows:
            assert box is not None
            await conn.execute(
                "UPDATE merchant_settings SET sealed_slack_webhook_url = $2, legacy_slack_webhook_url = NULL"
                " WHERE merchant_id = $1",
                row["merchant_id"],
                box.seal(row["legacy_slack_webhook_url"], context=row["merchant_id"]),
            )
    if rows:
        log.info("slack_urls_sealed", merchants=len(rows))
    return len(rows)
