"""Upgrading a notifier database: Slack URLs stored in clear end up sealed; emails sent before their refunds had an
order still count in it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from refundflow_notifier import message_queue
from refundflow_notifier.app import MIGRATIONS
from refundflow_notifier.merchant_settings import seal_legacy_slack_urls
from refundflow_notifier.records import Channel
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.secret_box import SecretBox, generate_key
from tests.conftest import create_database

SLACK_URL = "https://hooks.slack.com/services/T000/B000/secret-token"


@asynccontextmanager
async def database_before(postgres_url: str, tmp_path: Path, migration: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A new database with the notifier's migrations up to ``migration`` (not it), and a pool on it."""
    dsn = await create_database(postgres_url)
    before = tmp_path / "migrations"
    before.mkdir()
    for path in MIGRATIONS.glob("*.sql"):
        if path.name < migration:
            shutil.copy(path, before / path.name)
    await apply_migrations(dsn, "notifier", before)
    pool = await asyncpg.create_pool(dsn, server_settings={"search_path": "notifier"})
    assert pool is not None
    try:
        yield dsn, pool
    finally:
        await pool.close()


async def test_slack_urls_stored_in_clear_are_sealed_and_no_message_names_one(
    postgres_url: str, tmp_path: Path
) -> None:
    async with database_before(postgres_url, tmp_path, "0003") as (dsn, pool):
        event_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO merchant_settings (merchant_id, slack_webhook_url) VALUES ('mer_1', $1)", SLACK_URL
        )
        await pool.execute(
            "INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, body)"
            " VALUES ($1, $2, 'mer_1', 'slack', 'refund_to_review', $3, '{}')",
            f"{event_id}/refund_to_review/{SLACK_URL}",
            event_id,
            SLACK_URL,
        )

        await apply_migrations(dsn, "notifier", MIGRATIONS)
        box = SecretBox(generate_key())
        assert await seal_legacy_slack_urls(pool, box) == 1
        assert await seal_legacy_slack_urls(pool, box) == 0, "once"

        row = await pool.fetchrow("SELECT * FROM merchant_settings WHERE merchant_id = 'mer_1'")
        assert row is not None and row["legacy_slack_webhook_url"] is None
        assert box.open(row["sealed_slack_webhook_url"], context="mer_1") == SLACK_URL
        message = await pool.fetchrow("SELECT recipient, dedupe_key FROM messages")
        assert message is not None
        assert (message["recipient"], message["dedupe_key"]) == ("slack", f"{event_id}/refund_to_review/slack")


async def test_an_email_sent_before_the_upgrade_still_counts_as_the_one_before_its_refunds_next(
    postgres_url: str, tmp_path: Path
) -> None:
    async with database_before(postgres_url, tmp_path, "0800") as (dsn, pool):
        await pool.execute(
            "INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, body, refund_id,"
            " status, finished_at) VALUES ('k1', gen_random_uuid(), 'mer_1', 'email', 'refund_approved',"
            " 'ada@example.com', NULL, 'ref_1', 'sent', now())"
        )

        await apply_migrations(dsn, "notifier", MIGRATIONS)
        on_its_way = message_queue.QueuedMessage(
            uuid.uuid4(), "mer_1", Channel.EMAIL, "refund_succeeded", "ada@example.com", b"the email", "ref_1",
            wait_for_earlier_seconds=60,
        )  # fmt: skip
        async with pool.acquire() as conn, conn.transaction():
            await message_queue.queue(conn, [on_its_way])

        claimed = await message_queue.claim_due(pool, 10, [], lease_seconds=60, per_merchant=16)
        assert [m.kind for m in claimed] == ["refund_succeeded"], "its approval email went before the upgrade"
