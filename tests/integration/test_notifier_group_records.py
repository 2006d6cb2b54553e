"""What the notifier's workers answered together is recorded together, in one statement: each delivery and message
as if it had been recorded alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.records import DeliveredAttempt
from tests.support.notifier_harness import notifier_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

_CAPS = {"per_endpoint": 8, "per_merchant": 16}


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with notifier_database(postgres_url) as pool:
        yield pool


async def test_deliveries_answered_together_are_each_finished_with_their_attempt(pool: asyncpg.Pool) -> None:
    # Two endpoints, one of them failing until now; three deliveries: two to the failing one, one to the other.
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version,"
        " consecutive_failures) VALUES"
        " ('we_1', 'mer_1', 'https://example.com/1', '{refund.requested}', true, 'v1.x', 1, 3),"
        " ('we_2', 'mer_1', 'https://example.com/2', '{refund.requested}', true, 'v1.x', 1, 0);"
        " INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload) VALUES"
        " ('00000000-0000-0000-0000-000000000001', 'mer_1', 'refund.requested', now(), '{}'),"
        " ('00000000-0000-0000-0000-000000000002', 'mer_1', 'refund.requested', now(), '{}');"
        " INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id) VALUES"
        " ('we_1', 'mer_1', '00000000-0000-0000-0000-000000000001'),"
        " ('we_1', 'mer_1', '00000000-0000-0000-0000-000000000002'),"
        " ('we_2', 'mer_1', '00000000-0000-0000-0000-000000000001')"
    )
    claimed = await webhook_store.claim_due(pool, 10, [], lease_seconds=60, **_CAPS)
    assert len(claimed) == 3
    at = datetime.now(UTC)
    delivered = [DeliveredAttempt(d, at, 200 + i, 10 * (i + 1)) for i, d in enumerate(claimed)]

    async with pool.acquire() as conn:
        await webhook_store.record_successes(conn, delivered)
        await webhook_store.record_successes(conn, delivered[:1])  # recorded again (a retried group): no change

    rows = await pool.fetch(
        "SELECT d.id, d.status, d.locked_until, d.finished_at IS NOT NULL AS finished, a.attempt, a.status_code,"
        " a.latency_ms FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id ORDER BY d.id"
    )
    expected = sorted((d.delivery.id, "succeeded", None, True, 1, d.status_code, d.latency_ms) for d in delivered)
    assert [tuple(r) for r in rows] == expected
    failures = await pool.fetch("SELECT id, consecutive_failures FROM webhook_endpoints ORDER BY id")
    assert [tuple(r) for r in failures] == [("we_1", 0), ("we_2", 0)]
    assert await webhook_store.claim_due(pool, 10, [], lease_seconds=60, **_CAPS) == []


async def test_messages_sent_together_are_each_marked_sent_and_wiped(pool: asyncpg.Pool) -> None:
    ids = [
        await pool.fetchval(
            "INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, body)"
            " VALUES ($1, gen_random_uuid(), 'mer_1', 'email', 'refund_approved', $2, 'the email') RETURNING id",
            f"key-{n}",
            f"customer{n}@example.com",
        )
        for n in range(3)
    ]
    async with pool.acquire() as conn:
        await message_queue.finish(conn, ids[:2], "sent")

    rows = await pool.fetch(
        "SELECT id, status, body IS NULL AS wiped, sent_at IS NOT NULL AS sent, finished_at IS NOT NULL AS finished"
        " FROM messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (ids[0], "sent", True, True, True),
        (ids[1], "sent", True, True, True),
        (ids[2], "pending", False, False, False),  # not one of them: untouched
    ]
