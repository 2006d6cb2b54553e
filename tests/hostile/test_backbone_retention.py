"""Retention (review finding 24, backbone part): what has served its purpose goes, what may still be needed stays.

The outbox keeps a sent row for OUTBOX_RETENTION_DAYS (7) and a parked row until an operator deals with it. The
inbox keeps a handled event for INBOX_RETENTION_DAYS (30), longer than any record can be delivered again: a topic
keeps records TOPIC_RETENTION_DAYS (7), and a consumer group whose committed offsets expired (Kafka forgets them
after 7 days without commits) starts again from the oldest record. Were the inbox shorter, such a redelivery
would find no inbox row and repeat the effect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic import ValidationError

from refundflow_shared.database import RETENTION_LOCKS, create_pool
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.retention import deletion, prune, prune_all
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.probe_service import PROBE, PROBE_MIGRATIONS


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    database_url = await create_database(postgres_url)
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    pool = await create_pool(database_url, PROBE)
    yield pool
    await pool.close()


async def outbox_row(
    pool: asyncpg.Pool, name: str, *, sent_days_ago: float | None, parked_days_ago: float | None = None
) -> None:
    await pool.execute(
        "INSERT INTO outbox (event_id, event_type, partition_key, headers, payload, created_at, sent_at, parked_at)"
        " VALUES ($1, 'refund.requested', $2, '{}', $3, now() - interval '60 days',"
        " now() - make_interval(secs => $4::float8 * 86400), now() - make_interval(secs => $5::float8 * 86400))",
        uuid.uuid4(),
        name,
        json.dumps({"merchant_id": "mer_1"}).encode(),
        sent_days_ago,
        parked_days_ago,
    )


async def inbox_row(pool: asyncpg.Pool, name: str, *, handled_days_ago: float) -> None:
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type, handled_at)"
        " VALUES ($1, $2, 'refund.requested', now() - make_interval(secs => $3::float8 * 86400))",
        name,
        uuid.uuid4(),
        handled_days_ago,
    )


async def test_old_rows_are_pruned_fresh_ones_kept_and_parked_or_unsent_ones_never(pool: asyncpg.Pool) -> None:
    await outbox_row(pool, "sent_long_ago", sent_days_ago=8)
    await outbox_row(pool, "sent_lately", sent_days_ago=6)
    await outbox_row(pool, "never_sent", sent_days_ago=None)
    await outbox_row(pool, "parked_long_ago", sent_days_ago=None, parked_days_ago=90)
    await inbox_row(pool, "handled_long_ago", handled_days_ago=31)
    await inbox_row(pool, "handled_lately", handled_days_ago=29)

    rules = ServiceRuntime(PROBE, ServiceSettings(), PROBE_MIGRATIONS).retention_rules
    pruned = {rule.table: await prune(pool, rule) for rule in rules}

    assert pruned == {"outbox": 1, "inbox": 1}
    kept = {r["partition_key"] for r in await pool.fetch("SELECT partition_key FROM outbox")}
    assert kept == {"sent_lately", "never_sent", "parked_long_ago"}
    assert {r["consumer"] for r in await pool.fetch("SELECT consumer FROM inbox")} == {"handled_lately"}


async def test_retention_finds_the_few_old_rows_by_an_index_not_by_reading_every_row(pool: asyncpg.Pool) -> None:
    """Each instance looks for old inbox and outbox rows every few minutes and mostly finds none: a month of handled
    and sent events is read through an index on their age, never whole."""
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, event_type, handled_at) SELECT 'probe', gen_random_uuid(),"
        " 'refund.requested', now() - n * interval '2 minutes' FROM generate_series(1, 20000) AS n"
    )
    await pool.execute(
        "INSERT INTO outbox (event_id, event_type, partition_key, headers, payload, sent_at)"
        " SELECT gen_random_uuid(), 'refund.requested', 'pay_' || n % 100, '{}', '\\x00',"
        " now() - n * interval '30 seconds' FROM generate_series(1, 20000) AS n"
    )
    await pool.execute("ANALYZE inbox; ANALYZE outbox")

    for rule in ServiceRuntime(PROBE, ServiceSettings(), PROBE_MIGRATIONS).retention_rules:
        plan = "\n".join(r[0] for r in await pool.fetch(f"EXPLAIN {deletion(rule)}", rule.keep_for, 1000))
        assert "Seq Scan" not in plan, plan
        assert f"Index Scan using {rule.table}_{rule.age_column}" in plan, plan


async def test_one_instance_of_a_service_prunes_at_a_time(pool: asyncpg.Pool) -> None:
    """The others skip their pass: the rows they would look for are those the first one deletes."""
    await inbox_row(pool, "handled_long_ago", handled_days_ago=31)
    rules = ServiceRuntime(PROBE, ServiceSettings(), PROBE_MIGRATIONS).retention_rules
    async with pool.acquire() as other_instance, other_instance.transaction():
        took = "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))"
        assert await other_instance.fetchval(took, RETENTION_LOCKS), "its pass"
        assert await prune_all(pool, rules) is None
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
    assert await prune_all(pool, rules) == {"outbox": 0, "inbox": 1}


def test_the_inbox_outlives_every_redelivery_window() -> None:
    defaults = ServiceSettings()
    assert defaults.inbox_retention_days > defaults.topic_retention_days
    assert defaults.inbox_retention_days > 7, "Kafka's default offsets retention (offsets.retention.minutes)"
    with pytest.raises(ValidationError, match="INBOX_RETENTION_DAYS"):
        ServiceSettings(inbox_retention_days=7, topic_retention_days=14)
