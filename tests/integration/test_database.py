"""``transaction_holding``: BEGIN and an advisory lock in one round trip, against a real PostgreSQL."""

from __future__ import annotations

import pytest

from refundflow_shared.database import create_pool, transaction_holding


async def test_the_lock_is_held_until_the_transaction_ends_which_commits_or_rolls_back(database_url: str) -> None:
    pool = await create_pool(database_url, "public", max_size=2)
    try:
        async with pool.acquire() as conn, pool.acquire() as other:
            await conn.execute("CREATE TABLE kept (x int)")
            lock_is_free = "SELECT pg_try_advisory_xact_lock(hashtext('test.claim'))"  # autocommit: freed at once

            async with transaction_holding(conn, "test.claim"):
                assert conn.is_in_transaction()
                await conn.execute("INSERT INTO kept VALUES (1)")
                assert not await other.fetchval(lock_is_free), "held from the start of the transaction"
                assert await other.fetchval("SELECT count(*) FROM kept") == 0, "not committed yet"
            assert not conn.is_in_transaction()
            assert await other.fetchval(lock_is_free)
            assert await other.fetchval("SELECT count(*) FROM kept") == 1, "committed"

            with pytest.raises(RuntimeError, match="boom"):
                async with transaction_holding(conn, "test.claim"):
                    await conn.execute("INSERT INTO kept VALUES (2)")
                    raise RuntimeError("boom")
            assert not conn.is_in_transaction()
            assert await other.fetchval(lock_is_free)
            assert await other.fetchval("SELECT count(*) FROM kept") == 1, "rolled back"

            with pytest.raises(ValueError, match="not a lock name"):
                async with transaction_holding(conn, "x')); DROP TABLE kept; --"):
                    pass
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM kept") == 1, "nothing of the name reached the server"
    finally:
        await pool.close()
