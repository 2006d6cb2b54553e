"""What `refundflow stuck`, `outbox` and `refund` read from the services' schemas, on a real PostgreSQL: each state
written as the services leave it, no broker needed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from refundflow_cli.connections import database
from refundflow_cli.settings import CliSettings
from refundflow_devstack.service_migrations import migrate_all
from tests.cli.cli_worker import CliWorker
from tests.cli.refundflow_stack import CliResult
from tests.conftest import create_database
from tests.support.infrastructure import database_over_tcp, free_port


@pytest.fixture(scope="module")
def worker() -> Iterator[CliWorker]:
    running = CliWorker()
    yield running
    running.close()


async def refundflow(worker: CliWorker, database_url: str, *args: str) -> CliResult:
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "COLUMNS": "200"}
    return CliResult(*await worker.invoke(list(args), env))


@pytest.fixture(scope="module")
async def migrated(postgres_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    database_url = await create_database(postgres_url)
    await migrate_all(database_url)
    pool = await asyncpg.create_pool(database_url)
    assert pool is not None
    yield database_url, pool
    await pool.close()


async def intake_refund(db: asyncpg.Pool, status: str, **times: str) -> str:
    """A refund as intake keeps it; ``times`` are SQL expressions for its timestamps."""
    suffix = uuid.uuid4().hex[:10]
    merchant, payment, refund = f"mer_{suffix}", f"pay_{suffix}", f"ref_{suffix}"
    await db.execute("INSERT INTO intake.merchants (id, name) VALUES ($1, 'Acme')", merchant)
    await db.execute(
        "INSERT INTO intake.payments (id, merchant_id, customer_email, amount, currency, provider_payment_id, paid_at,"
        " product_id, product_name, product_kind) VALUES ($1, $2, 'ada@example.com', 5000, 'EUR', $3, now(),"
        " 'prod_1', 'Pro', 'one_time')",
        payment,
        merchant,
        f"pi_{suffix}",
    )
    columns = ", ".join(times)
    values = ", ".join(times.values())
    await db.execute(
        "INSERT INTO intake.refunds (id, merchant_id, payment_id, amount, currency, reason, status"
        + (f", {columns}) " if times else ") ")
        + "VALUES ($1, $2, $3, 2500, 'EUR', 'requested_by_customer', $4"
        + (f", {values})" if times else ")"),
        refund,
        merchant,
        payment,
        status,
    )
    return refund


async def processor_attempt(db: asyncpg.Pool, refund_id: str, state: str, last_error: str) -> None:
    await db.execute(
        "INSERT INTO processor.refunds (refund_id, payment_id, merchant_id, customer_email, amount, currency,"
        " provider_payment_id, payment_amount, status) VALUES ($1, 'pay_x', 'mer_x', 'ada@example.com', 2500, 'EUR',"
        " 'pi_x', 5000, 'processing')",
        refund_id,
    )
    await db.execute(
        "INSERT INTO processor.refund_attempts (refund_id, attempt, idempotency_key, state, tries, last_error,"
        " updated_at) VALUES ($1, 1, $2, $3, 4, $4, now() - interval '20 minutes')",
        refund_id,
        f"refund_{refund_id}_1",
        state,
        last_error,
    )


async def test_stuck_finds_long_processing_refunds_unknown_outcomes_and_requests_past_their_review_target(
    migrated: tuple[str, asyncpg.Pool], worker: CliWorker
) -> None:
    database_url, db = migrated
    slow = await intake_refund(db, "processing", updated_at="now() - interval '1 hour'")
    await processor_attempt(db, slow, "scheduled", "APIConnectionError: timed out")
    fresh = await intake_refund(db, "processing")
    unknown = await intake_refund(db, "processing", updated_at="now() - interval '3 minutes'")
    await processor_attempt(db, unknown, "unknown", "the provider could not be asked")
    overdue = await intake_refund(db, "pending", review_due_at="now() - interval '2 hours'")
    await intake_refund(db, "pending", review_due_at="now() + interval '1 day'")

    found = await refundflow(worker, database_url, "stuck", "--json")
    assert found.exit_code == 1, found.stderr
    report: dict[str, Any] = found.json()
    assert [r["refund_id"] for r in report["processing"]] == [slow]
    assert report["processing"][0]["latest_attempt"]["last_error"] == "APIConnectionError: timed out"
    assert [(r["refund_id"], r["idempotency_key"]) for r in report["unknown_outcomes"]] == [
        (unknown, f"refund_{unknown}_1")
    ]
    assert [r["refund_id"] for r in report["review_overdue"]] == [overdue]
    assert fresh not in json.dumps(report)

    longer = await refundflow(worker, database_url, "stuck", "--older-than", "2h", "--json")
    assert longer.exit_code == 1 and longer.json()["processing"] == []
    readable = await refundflow(worker, database_url, "stuck")
    assert readable.exit_code == 1
    for refund_id in (slow, unknown, overdue):
        assert refund_id in readable.stdout
    assert "€25.00" in readable.stdout and "2500 EUR" not in readable.stdout, "amounts as people read them"


async def test_an_outbox_whose_oldest_event_waits_too_long_is_a_problem(
    migrated: tuple[str, asyncpg.Pool], worker: CliWorker
) -> None:
    database_url, db = migrated
    await db.execute(
        "INSERT INTO processor.outbox (event_id, event_type, partition_key, headers, payload, created_at)"
        " VALUES ($1, 'refund.succeeded', 'pay_1', '{}', '{}', now() - interval '10 minutes')",
        uuid.uuid4(),
    )
    waiting = await refundflow(worker, database_url, "outbox", "--json")
    assert waiting.exit_code == 1
    report = waiting.json()
    [processor] = [o for o in report["outboxes"] if o["service"] == "processor"]
    assert processor["unsent"] == 1 and processor["oldest_unsent_seconds"] >= 600
    assert report["stale"] == ["processor"]
    patient = await refundflow(worker, database_url, "outbox", "--stale-after", "1h", "--json")
    assert patient.exit_code == 0


async def test_a_deployment_whose_services_never_started_has_nothing_stuck_and_no_refund(
    postgres_url: str, worker: CliWorker
) -> None:
    empty = await create_database(postgres_url)
    stuck = await refundflow(worker, empty, "stuck", "--json")
    assert stuck.exit_code == 0 and stuck.json()["found"] is False
    outboxes = await refundflow(worker, empty, "outbox", "--json")
    assert outboxes.exit_code == 0
    assert [o["present"] for o in outboxes.json()["outboxes"]] == [False, False, False]
    refund = await refundflow(worker, empty, "refund", "ref_nowhere")
    assert refund.exit_code == 4
    assert "no refund ref_nowhere" in refund.stderr


async def test_a_refunds_story_says_when_an_email_still_to_send_is_due(
    migrated: tuple[str, asyncpg.Pool], worker: CliWorker
) -> None:
    database_url, db = migrated
    refund_id = await intake_refund(db, "succeeded")
    # "On its way", waiting for its approval email (or retrying): pending, no attempt, no error yet.
    await db.execute(
        "INSERT INTO notifier.messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, body, refund_id,"
        " next_attempt_at) VALUES ($1, gen_random_uuid(), 'mer_1', 'email', 'refund_succeeded', 'ada@example.com',"
        " 'the email', $2, now() + interval '30 seconds')",
        f"key-{refund_id}",
        refund_id,
    )

    story = await refundflow(worker, database_url, "refund", refund_id, "--json")
    assert story.exit_code == 0, story.stderr
    [message] = story.json()["notifier"]["messages"]
    assert message["status"] == "pending" and message["due_at"] is not None
    readable = await refundflow(worker, database_url, "refund", refund_id)
    assert datetime.fromisoformat(message["due_at"]).isoformat(timespec="seconds") in readable.stdout
    assert "succeeded, €25.00 of payment" in readable.stdout


async def test_an_operators_session_ends_an_idle_transaction_and_probes_a_silent_peer(database_url: str) -> None:
    """A CLI left at a prompt inside a transaction, or whose network dropped, must not hold its locks for hours:
    its session tells the server what a service's does."""
    settings = CliSettings(database_url=await database_over_tcp(database_url))
    async with database(settings) as conn:
        told = dict(
            await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN ('idle_in_transaction_session_timeout',"
                " 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count')"
            )
        )
    assert told == {
        "idle_in_transaction_session_timeout": "300000",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }
