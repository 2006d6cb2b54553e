"""Upgrading a notifier database: Slack URLs stored in clear end up sealed; emails sent before their refunds had an
order still count in it; endpoints disabled before intake heard of disables are announced to it, once; webhook events
kept with the customer's portal link are sent without it."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from standardwebhooks.webhooks import Webhook

from refundflow_notifier import message_queue, webhook_replays, webhook_store
from refundflow_notifier.app import MIGRATIONS
from refundflow_notifier.endpoint_disable_announcements import announce_earlier_disables
from refundflow_notifier.merchant_settings import seal_legacy_slack_urls
from refundflow_notifier.outbound_http import outbound_client
from refundflow_notifier.records import Channel
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.secret_box import SecretBox, generate_key
from tests.conftest import create_database
from tests.support.notifier_harness import TEST_SECRET_KEY, notifier_database, notifier_settings
from tests.support.notifier_receivers import http_receiver

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


async def test_webhook_events_kept_before_the_upgrade_are_replayed_without_the_customers_portal_link(
    postgres_url: str,
) -> None:
    """Events kept by an earlier version hold the sealed link in their data: a replay sends each without it, the rest
    as it was kept, signed over the body sent. One kept since is sent as it is, byte for byte."""
    merchant_id, endpoint_id, secret = "mer_1", f"we_{uuid.uuid4().hex[:12]}", new_signing_secret()
    data = {"merchant_id": merchant_id, "refund_id": "ref_1", "merchant_name": "Acme", "amount": 100}
    link = {"sealed_url": "v2.k0.sealed", "expires_at": "2030-01-01T00:00:00Z"}
    kept_data = {
        "with_link": {**data, "portal_link": link},
        "with_no_link": {**data, "portal_link": None},
        "kept_since": {**data, "merchant_name": "portal_link"},  # names it, but only in a value
    }
    async with http_receiver() as http, notifier_database(postgres_url) as pool:
        await pool.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
            " VALUES ($1, $2, $3, '{refund.succeeded}', true, $4, 1)",
            endpoint_id,
            merchant_id,
            http.url(endpoint_id),
            SecretBox(TEST_SECRET_KEY).seal(secret, context=endpoint_id),
        )
        stored = {}
        for name, event_data in kept_data.items():
            event_id = uuid.uuid4()
            event = {"id": str(event_id), "type": "refund.succeeded", "sequence": 4, "data": event_data}
            stored[name] = json.dumps(event, separators=(",", ":"))
            await pool.execute(
                "INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
                " VALUES ($1, $2, 'refund.succeeded', now() - interval '1 minute', $3)",
                event_id,
                merchant_id,
                stored[name],
            )

        async with pool.acquire() as conn, conn.transaction():
            since = datetime.now(UTC) - timedelta(hours=1)
            assert await webhook_replays.request_replay(conn, endpoint_id, since, reach=timedelta(days=30))
        replay_id = await pool.fetchval("SELECT id FROM webhook_replays")
        while await webhook_replays.walk_batch(pool, replay_id, batch=10, lease_seconds=30):
            pass
        settings = notifier_settings("postgresql://unused/notifier", "unused:9092", 1025)
        async with outbound_client(allow_private=True, max_connections=4) as client:
            worker = WebhookWorker(pool, settings, client, SecretBox(TEST_SECRET_KEY))
            claimed = await webhook_store.claim_due(pool, 10, [], lease_seconds=60, per_endpoint=10, per_merchant=10)
            for delivery in claimed:
                await worker.deliver(delivery)

    sent = {}
    for arrived in http.received[endpoint_id]:
        payload = Webhook(secret).verify(arrived.body, arrived.headers)
        sent[payload["id"]] = arrived.body
    assert sent.keys() == {json.loads(kept)["id"] for kept in stored.values()}
    for name in ("with_link", "with_no_link"):
        event = json.loads(stored[name])
        event["data"] = data  # in its place, as an event kept since would be written
        assert sent[event["id"]] == json.dumps(event, separators=(",", ":")).encode(), name
    assert sent[json.loads(stored["kept_since"])["id"]] == stored["kept_since"].encode()
