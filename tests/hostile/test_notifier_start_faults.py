"""The notifier's start-up reads (sealing Slack URLs stored in clear, announcing endpoints disabled before) meet a
database that drops their connection: they are tried again as every job's work is, and email and webhook delivery
still starts. Before, one dropped connection there ended the notifier's workers for good, silently."""

from __future__ import annotations

import asyncpg

from refundflow_notifier.app import MIGRATIONS, create_app
from refundflow_shared.migrations_runner import apply_migrations
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import notifier_settings
from tests.support.probe_service import eventually

SLACK_URL = "https://hooks.slack.com/services/T000/B000/secret-token"


async def test_a_connection_dropped_under_the_start_up_reads_is_retried_and_the_workers_run(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    dsn = await create_database(postgres_url)
    await apply_migrations(dsn, "notifier", MIGRATIONS)
    holder = await asyncpg.connect(dsn, server_settings={"search_path": "notifier"})
    try:
        await holder.execute(
            "INSERT INTO merchant_settings (merchant_id, legacy_slack_webhook_url) VALUES ('mer_1', $1)", SLACK_URL
        )
        # An operator's lock holds the start-up read; the connection it waits on is then dropped (as a failover or
        # pg_terminate_backend would).
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE merchant_settings IN ACCESS EXCLUSIVE MODE")
        app = create_app(notifier_settings(dsn, kafka_bootstrap, free_port()))
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime

            async def waiting_on_the_lock() -> list[int]:
                return [
                    row["pid"]
                    for row in await holder.fetch(
                        "SELECT pid FROM pg_locks WHERE relation = 'notifier.merchant_settings'::regclass"
                        " AND NOT granted"
                    )
                ]

            async def start_up_read_waits() -> bool:
                return bool(await waiting_on_the_lock())

            await eventually(start_up_read_waits)
            for pid in await waiting_on_the_lock():
                await holder.execute("SELECT pg_terminate_backend($1)", pid)
            await lock.rollback()

            async def sealed() -> bool:
                return bool(
                    await holder.fetchval(
                        "SELECT legacy_slack_webhook_url IS NULL FROM merchant_settings WHERE merchant_id = 'mer_1'"
                    )
                )

            await eventually(sealed, timeout=20)
            assert runtime.dead_jobs == []
    finally:
        await holder.close()
