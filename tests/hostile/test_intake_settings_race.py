"""Saving notification settings without a Slack URL keeps the saved one: the one saved when the write lands, not the
one read before it waited (which brought back a URL another save had just cleared)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_save_that_keeps_the_slack_url_keeps_the_one_saved_while_it_waited(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    leaked = "http://127.0.0.1:9/hooks/leaked"
    saved = await intake.client.put("/v1/notification-settings", headers=merchant, json={"slack_webhook_url": leaked})
    assert saved.status_code == 200, saved.text

    async with intake.db.acquire() as other, other.transaction():
        # Another save holds the row, clearing the leaked URL, while this one (leaving the URL out) runs.
        await other.execute(
            "UPDATE notification_settings SET sealed_slack_webhook_url = NULL WHERE merchant_id = $1", merchant_id
        )
        keeping = asyncio.create_task(
            intake.client.put("/v1/notification-settings", headers=merchant, json={"team_email": "ops@acme.example"})
        )

        async def waiting_for_the_row() -> bool:
            return bool(
                await intake.db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO notification_settings%'"
                )
            )

        await eventually(waiting_for_the_row, timeout=30)
    answer = await keeping

    assert answer.status_code == 200, answer.text
    assert answer.json()["slack_webhook_url"] is None, "the cleared URL stays cleared"
    [last] = await intake.db.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'notification_settings.configured' AND partition_key = $1"
        " ORDER BY id DESC LIMIT 1",
        merchant_id,
    )
    assert json.loads(bytes(last["payload"]))["sealed_slack_webhook_url"] is None, "and the notifier is told so"
