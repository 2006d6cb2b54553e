"""The replay ledger on a real PostgreSQL: a dead letter is replayed once, and a new letter at a position an old
one held (the dead-letter topic deleted and created again, its offsets from 0 again) is a letter of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from refundflow_cli import replay_ledger
from refundflow_cli.dead_letters import DeadLetter
from refundflow_cli.settings import CliSettings
from tests.conftest import create_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


def letter(offset: int) -> DeadLetter:
    headers = {"ce_id": str(uuid.uuid4()), "dlq_reason": "handler_error", "dlq_consumer": "notifier"}
    return DeadLetter("t.refund.approved.dlq", 0, offset, datetime.now(UTC), b"pay_1", b"{}", headers)


async def test_a_new_letter_at_a_replayed_letters_position_is_not_taken_as_replayed(postgres_url: str) -> None:
    database_url = await create_database(postgres_url)
    await replay_ledger.prepare(CliSettings(database_url=database_url))
    conn = await asyncpg.connect(database_url)
    try:
        old = letter(0)
        async with conn.transaction():
            assert await replay_ledger.claim(conn, [old]) == [old]
        async with conn.transaction():
            assert await replay_ledger.claim(conn, [old]) == [], "replayed once"
        assert set(await replay_ledger.replayed(conn, [old])) == {old.position}

        new = letter(0)  # the topic purged by deleting and creating it: offset 0 again, another event
        assert await replay_ledger.replayed(conn, [new]) == {}
        async with conn.transaction():
            assert await replay_ledger.claim(conn, [new]) == [new]
    finally:
        await conn.close()
