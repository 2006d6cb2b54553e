"""Upgrading a notifier database: Slack URLs stored in clear end up sealed; emails sent before their refunds had an
order still count in it; endpoints disabled before intake heard of disables are announced to it, once."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from refundflow_notifier import message_queue
from refundflow_notifier.app import MIGRATIONS
from refundflow_notifier.endpoint_disable_announcements import announce_earlier_disables
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
            waits_for_step=1, wait_for_earlier_seconds=60,
        )  # fmt: skip
        async with pool.acquire() as conn, conn.transaction():
            await message_queue.queue(conn, [on_its_way])

        claimed = await message_queue.claim_due(pool, 10, [], lease_seconds=60, per_merchant=16)
        assert [m.kind for m in claimed] == ["refund_succeeded"], "its approval email went before the upgrade"


async def test_endpoints_refundflow_disabled_before_intake_heard_of_disables_are_announced_to_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    async with database_before(postgres_url, tmp_path, "0861") as (dsn, pool):
        endpoints = [  # id, enabled, deleted, disabled_reason, version
            ("we_gone", False, False, "endpoint_gone", 3),  # Refundflow disabled it: intake still shows it enabled
            ("we_off", False, False, None, 2),  # the merchant switched it off: intake knows
            ("we_on", True, False, None, 1),
            ("we_deleted", False, True, "failing", 4),  # deleted since: nothing to show
        ]
        for endpoint_id, enabled, deleted, reason, version in endpoints:
            await pool.execute(
                "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, deleted, encrypted_secret,"
                " version, disabled_reason) VALUES ($1, 'mer_1', 'https://hooks.acme.example', '{refund.succeeded}',"
                " $2, $3, 'sealed', $4, $5)",
                endpoint_id,
                enabled,
                deleted,
                version,
                reason,
            )

        await apply_migrations(dsn, "notifier", MIGRATIONS)
        assert await announce_earlier_disables(pool) == 1
        assert await announce_earlier_disables(pool) == 0, "once"

        [staged] = await pool.fetch("SELECT event_type, partition_key, payload FROM outbox")
        assert (staged["event_type"], staged["partition_key"]) == ("webhook_endpoint.disabled", "mer_1")
        announced = json.loads(bytes(staged["payload"]))
        assert announced == {"merchant_id": "mer_1", "endpoint_id": "we_gone", "reason": "endpoint_gone", "version": 3}


async def test_webhook_events_kept_before_the_upgrade_lose_the_customers_portal_link(
    postgres_url: str, tmp_path: Path
) -> None:
    """A replay sends the event as it was kept: one kept with the sealed link must no longer carry it."""
    data = {"merchant_id": "mer_1", "refund_id": "ref_1", "merchant_name": "Acme", "amount": 100}
    kept = {"type": "refund.succeeded", "sequence": 4}
    with_link = {**data, "portal_link": {"sealed_url": "v2.k0.sealed", "expires_at": "2030-01-01T00:00:00Z"}}
    without_link = {**data, "portal_link": None}
    async with database_before(postgres_url, tmp_path, "0963") as (dsn, pool):
        for event_data in (with_link, without_link):
            event_id = uuid.uuid4()
            await pool.execute(
                "INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
                " VALUES ($1, 'mer_1', 'refund.succeeded', now(), $2)",
                event_id,
                json.dumps({"id": str(event_id), **kept, "data": event_data}, separators=(",", ":")),
            )

        await apply_migrations(dsn, "notifier", MIGRATIONS)
        rows = await pool.fetch("SELECT event_id, payload FROM webhook_events")
        assert len(rows) == 2
        for row in rows:
            payload = json.loads(row["payload"])
            assert payload == {**kept, "id": str(row["event_id"]), "data": data}, "the rest kept as it was"
