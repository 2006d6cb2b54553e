"""What the notifier's workers answered together is recorded together, in one statement: each delivery and message
as if it had been recorded alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from refundflow_notifier import message_queue, webhook_store
from refundflow_notifier.customer_emails import STEP_IN_THE_REFUND
from refundflow_notifier.records import Channel, ClaimedMessage, DeliveredAttempt
from tests.support.notifier_harness import notifier_database
from tests.support.probe_service import eventually

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
    delivered = [DeliveredAttempt(d, at, 200 + i, 10 * (i + 1), None) for i, d in enumerate(claimed)]

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
    claimed = await message_queue.claim_due(pool, 10, [], lease_seconds=60, per_merchant=16)
    async with pool.acquire() as conn:
        await message_queue.finish(conn, [m for m in claimed if m.id in ids[:2]], "sent")

    rows = await pool.fetch(
        "SELECT id, status, body IS NULL AS wiped, sent_at IS NOT NULL AS sent, finished_at IS NOT NULL AS finished"
        " FROM messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (ids[0], "sent", True, True, True),
        (ids[1], "sent", True, True, True),
        (ids[2], "pending", False, False, False),  # not one of them: untouched
    ]


def email(
    kind: str, refund_id: str = "ref_1", *, recipient: str = "ada@example.com", wait: float = 0.0
) -> message_queue.QueuedMessage:
    """An email as ``message_queue.email`` leaves it to queue (``wait``: its ``wait_for_earlier_seconds``, for the
    email one step before it)."""
    waits_for = STEP_IN_THE_REFUND[kind] - 1 if wait else None
    return message_queue.QueuedMessage(
        uuid.uuid4(), "mer_1", Channel.EMAIL, kind, recipient, b"the email", refund_id,
        waits_for_step=waits_for, wait_for_earlier_seconds=wait,
    )  # fmt: skip


async def queue(pool: asyncpg.Pool, *messages: message_queue.QueuedMessage) -> None:
    """Queued together, as one consumer batch queues them."""
    async with pool.acquire() as conn, conn.transaction():
        await message_queue.queue(conn, messages)


async def claim(pool: asyncpg.Pool) -> list[str]:
    """What one claim takes: each message's kind, and its recipient when it is not the customer."""
    claimed = await message_queue.claim_due(pool, 10, [], lease_seconds=60, per_merchant=16)
    return sorted(m.kind + ("" if m.recipient == "ada@example.com" else f" to {m.recipient}") for m in claimed)


def claimed_email(row: asyncpg.Record) -> ClaimedMessage:
    """The claim of an email, as far as recording its end needs: which message, and which of its attempts."""
    return ClaimedMessage(
        row["id"],
        uuid.uuid4(),
        "mer_1",
        Channel.EMAIL,
        row["kind"],
        "ada@example.com",
        b"",
        row["attempts"],
        None,
        None,
    )


async def finish(pool: asyncpg.Pool, kind: str, status: str = "sent") -> None:
    """ref_1's email of ``kind`` is done."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, kind, attempts FROM messages WHERE kind = $1 AND refund_id = 'ref_1'", kind
        )
        await message_queue.finish(conn, [claimed_email(row)], status)


async def test_a_recipients_emails_about_one_refund_are_claimed_one_at_a_time_in_the_refunds_order(
    pool: asyncpg.Pool,
) -> None:
    # One consumer batch reads topic by topic, so it can queue a refund's emails in any order: here, backwards.
    await queue(
        pool,
        email("refund_succeeded"),
        email("refund_approved"),
        email("refund_requested"),
        email("refund_requested", "ref_2"),
        email("team_alert", recipient="team@example.com"),
    )

    # Sent together, "on its way" could reach the customer before "approved": one at a time, in the refund's order.
    assert await claim(pool) == [
        "refund_requested",
        "refund_requested",  # another refund's: not held
        "team_alert to team@example.com",  # another recipient's: not held
    ]
    assert await claim(pool) == []  # "approved" waits while "received" is out, however long its send takes
    await finish(pool, "refund_requested")
    assert await claim(pool) == ["refund_approved"]
    await finish(pool, "refund_approved", "failed")  # refused for good: finished, so it holds nothing back
    assert await claim(pool) == ["refund_succeeded"]


async def test_an_email_that_always_follows_another_waits_for_it_to_be_queued(pool: asyncpg.Pool) -> None:
    # "On its way" came in first: the approval's event is in a batch still to come (another topic).
    await queue(pool, email("refund_succeeded", wait=60))
    assert await claim(pool) == []
    await queue(pool, email("refund_approved"))  # here it is: "on its way" no longer waits for it, only behind it
    assert await claim(pool) == ["refund_approved"]
    await finish(pool, "refund_approved")
    assert await claim(pool) == ["refund_succeeded"]
    await finish(pool, "refund_succeeded")
    await queue(pool, email("refund_reversed", wait=60))  # what it follows was sent long ago: it waits for nothing
    assert await claim(pool) == ["refund_reversed"]


async def test_an_email_whose_earlier_one_never_comes_is_sent_after_its_wait(pool: asyncpg.Pool) -> None:
    # A failure whose approval email was never queued (the customer's address came only later, say). The wait is
    # long enough that the first claim comes within it however loaded the machine; then claims until one takes it.
    queued_at = time.monotonic()
    await queue(pool, email("refund_failed", wait=3))

    assert await claim(pool) == []
    taken: list[str] = []

    async def claimed() -> bool:
        taken.extend(await claim(pool))
        return bool(taken)

    await eventually(claimed, timeout=30)
    assert taken == ["refund_failed"]
    assert time.monotonic() - queued_at >= 3, "not before its wait ran out"


async def test_the_emails_behind_one_that_is_retried_later_are_due_no_sooner(pool: asyncpg.Pool) -> None:
    await queue(pool, email("refund_approved"), email("refund_succeeded"), email("refund_succeeded", "ref_2"))
    assert await claim(pool) == ["refund_approved", "refund_succeeded"]  # ref_2's "on its way" goes too
    approved = await pool.fetchrow("SELECT id, kind, attempts FROM messages WHERE kind = 'refund_approved'")
    async with pool.acquire() as conn:
        await message_queue.retry_later(conn, claimed_email(approved), 300, "SMTP 451: try again later")

    # Behind it, "on its way" is not due before it: a claim passes over it in the index, not row by row.
    due = await pool.fetch(
        "SELECT kind, refund_id, next_attempt_at > now() + interval '250 seconds' AS later FROM messages ORDER BY id"
    )
    assert [tuple(r) for r in due] == [
        ("refund_approved", "ref_1", True),
        ("refund_succeeded", "ref_1", True),
        ("refund_succeeded", "ref_2", False),  # another refund's: untouched
    ]
