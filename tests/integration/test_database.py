"""The database helpers against a real PostgreSQL: the services' pool (what its sessions tell the server),
``transaction_holding`` (BEGIN and an advisory lock in one round trip), intake's ``Database`` (a write's transaction, a
read of several statements that agree) and the migrations' lock and checks (a schema a newer build migrated, a
migration edited since it ran, a table another session holds)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from refundflow_intake import rate_limit
from refundflow_intake.app import MIGRATIONS as INTAKE_MIGRATIONS
from refundflow_shared import migrations_runner
from refundflow_shared.database import (
    CLAIM_LOCKS,
    MIGRATION_LOCKS,
    create_pool,
    read_snapshot,
    session_settings,
    transaction_holding,
)
from refundflow_shared.migrations_runner import MigrationsRefused, apply_migrations
from tests.support.infrastructure import database_over_tcp
from tests.support.probe_service import PROBE, PROBE_MIGRATIONS, eventually


async def test_a_service_session_ends_an_idle_transaction_and_probes_a_silent_peer(database_url: str) -> None:
    """An instance whose host vanishes mid-transaction (power lost, a partition) must not hold its rows and locks
    until the kernel's default keepalive notices, over two hours later."""
    pool = await create_pool(await database_over_tcp(database_url), "public", max_size=1)
    try:
        settings = dict(
            await pool.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN ('idle_in_transaction_session_timeout',"
                " 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count')"
            )
        )
    finally:
        await pool.close()
    assert settings == {
        "idle_in_transaction_session_timeout": "300000",  # ms: well above the relay's longest wait for the broker
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }


async def test_a_transaction_left_idle_is_ended_by_the_server_and_its_locks_freed(database_url: str) -> None:
    """A claim's advisory lock and the relay's row locks, held by an instance that stopped answering, are freed once
    its transaction sat idle past the timeout (5 minutes in the services, 1 s here)."""
    pool = await create_pool(database_url, "public", max_size=2, idle_in_transaction_timeout_seconds=1)
    try:
        async with pool.acquire() as stalled, pool.acquire() as other:
            await other.execute("CREATE TABLE outbox_rows (id int PRIMARY KEY); INSERT INTO outbox_rows VALUES (1)")
            lock_is_free = f"SELECT pg_try_advisory_xact_lock({CLAIM_LOCKS}, hashtext('test.claim'))"
            await stalled.execute(f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCKS}, hashtext('test.claim'))")
            await stalled.execute("SELECT id FROM outbox_rows FOR UPDATE")  # then its process stops answering
            stalled_pid = stalled.get_server_pid()
            assert not await other.fetchval(lock_is_free)

            # Waits for the row until the server ends the stalled session (asyncpg's timeout fails it otherwise).
            assert await other.fetchval("SELECT id FROM outbox_rows FOR UPDATE", timeout=20) == 1

            async def claim_lock_freed_and_session_gone() -> bool:  # the server frees advisory locks a moment later
                gone = not await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", stalled_pid)
                return gone and bool(await other.fetchval(lock_is_free))

            await eventually(claim_lock_freed_and_session_gone, timeout=10)
    finally:
        await pool.close()


async def test_the_lock_is_held_until_the_transaction_ends_which_commits_or_rolls_back(database_url: str) -> None:
    pool = await create_pool(database_url, "public", max_size=2)
    try:
        async with pool.acquire() as conn, pool.acquire() as other:
            await conn.execute("CREATE TABLE kept (x int)")
            lock_is_free = f"SELECT pg_try_advisory_xact_lock({CLAIM_LOCKS}, hashtext('test.claim'))"  # freed at once

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


async def test_a_snapshot_reads_one_state_of_the_database_and_writes_nothing(database_url: str) -> None:
    """A page or a view that reads in several statements (a payment, then its refunds) shows one moment: what
    commits between its statements is not half in it."""
    pool = await create_pool(database_url, "public", max_size=2)
    try:
        async with pool.acquire() as other:
            await other.execute("CREATE TABLE refunded (amount int)")
            async with read_snapshot(pool) as conn:
                assert await conn.fetchval("SELECT count(*) FROM refunded") == 0
                await other.execute("INSERT INTO refunded VALUES (500)")  # committed between the two reads
                assert await conn.fetchval("SELECT count(*) FROM refunded") == 0, "the same moment as the first read"
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute("INSERT INTO refunded VALUES (1)")
            async with read_snapshot(pool) as conn:
                assert await conn.fetchval("SELECT sum(amount) FROM refunded") == 500, "the next one sees it"
    finally:
        await pool.close()


_TAKE_MIGRATION_LOCK = "SELECT pg_advisory_lock($1, hashtext($2))"  # a schema's, as the runner takes it
_ADVISORY_LOCKS = (
    "SELECT classid::bigint, objsubid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database ="
    " (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def test_a_rate_limits_lock_is_in_a_class_of_its_own_apart_from_claims(database_url: str) -> None:
    """A rate limit's bucket holds what a user typed (a sign-in email's hash): hashed into the claims' key space, a
    chosen email could take a claim's lock. Each use has its own class (the two-key form), so none ever meets."""
    await apply_migrations(database_url, "intake", INTAKE_MIGRATIONS)
    pool = await create_pool(database_url, "intake", max_size=3)
    try:
        async with pool.acquire() as conn, pool.acquire() as other:
            async with transaction_holding(conn, "processor.extension_claim"):
                [claim] = await other.fetch(_ADVISORY_LOCKS)

            async with other.transaction():  # the rate limit waits at its insert, holding its lock
                await other.execute("LOCK TABLE rate_limit_attempts IN EXCLUSIVE MODE")
                now = datetime.now(UTC)
                taking = asyncio.create_task(
                    rate_limit.take(pool, "login:account:0a1b2c", limit=5, window=timedelta(minutes=15), now=now)
                )

                async def locked() -> bool:
                    return bool(await conn.fetch(_ADVISORY_LOCKS))

                await eventually(locked, timeout=10)
                [bucket] = await conn.fetch(_ADVISORY_LOCKS)
            await taking
    finally:
        await pool.close()

    assert claim["objsubid"] == bucket["objsubid"] == 2, "both in the two-key form: a class, then the hashed name"
    assert claim["classid"] != bucket["classid"], "claims and rate limits lock in classes of their own"


async def test_an_up_to_date_service_starts_while_its_schema_migrates_and_one_with_a_migration_to_run_waits(
    database_url: str, tmp_path: Path
) -> None:
    """Each schema migrates under a lock of its own. A service restarting while its schema runs a long migration finds
    nothing to run and starts at once, without that lock; one with a migration of its own waits for it, then runs it."""
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    later = tmp_path / "later_migrations"
    later.mkdir()
    for path in PROBE_MIGRATIONS.glob("*.sql"):
        (later / path.name).write_text(path.read_text())
    (later / "0002_effect_notes.sql").write_text("ALTER TABLE effects ADD COLUMN note text;")
    other_instance = await asyncpg.connect(database_url)
    try:
        await other_instance.execute(_TAKE_MIGRATION_LOCK, MIGRATION_LOCKS, PROBE)  # its long migration

        assert await asyncio.wait_for(apply_migrations(database_url, PROBE, PROBE_MIGRATIONS), timeout=5) == []

        waiting = asyncio.create_task(apply_migrations(database_url, PROBE, later))
        await asyncio.sleep(1)
        assert not waiting.done(), "a migration to run waits for the lock"
        await other_instance.execute("SELECT pg_advisory_unlock($1, hashtext($2))", MIGRATION_LOCKS, PROBE)
        assert await asyncio.wait_for(waiting, timeout=10) == ["service/0002_effect_notes.sql"]
    finally:
        await other_instance.close()


async def test_a_schema_migrates_while_another_schema_runs_a_long_migration(database_url: str, tmp_path: Path) -> None:
    """Schemas are disjoint: intake's start does not wait behind the processor's backfill."""
    slow = tmp_path / "slow_migrations"
    slow.mkdir()
    for path in PROBE_MIGRATIONS.glob("*.sql"):
        (slow / path.name).write_text(path.read_text())
    (slow / "0002_backfill.sql").write_text("SELECT pg_sleep(5);")
    backfill = asyncio.create_task(apply_migrations(database_url, "slow_probe", slow))
    watcher = await asyncpg.connect(database_url)
    try:

        async def backfilling() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(5)%'"
                    " AND pid <> pg_backend_pid()"
                )
            )

        await eventually(backfilling, timeout=10)
        applied = await asyncio.wait_for(apply_migrations(database_url, PROBE, PROBE_MIGRATIONS), timeout=3)
        assert "service/0001_effects.sql" in applied
        assert not backfill.done()
        assert "service/0002_backfill.sql" in await asyncio.wait_for(backfill, timeout=20)
    finally:
        await watcher.close()


def _copy_of_probe_migrations(folder: Path) -> Path:
    folder.mkdir()
    for path in PROBE_MIGRATIONS.glob("*.sql"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


async def test_an_older_build_refuses_a_schema_a_newer_one_migrated(database_url: str, tmp_path: Path) -> None:
    """It started, and wrote what the newer schema no longer takes (a column it dropped, a key it widened)."""
    newer = _copy_of_probe_migrations(tmp_path / "newer")
    (newer / "0002_effect_notes.sql").write_text("ALTER TABLE effects ADD COLUMN note text;")
    await apply_migrations(database_url, PROBE, newer)

    with pytest.raises(MigrationsRefused, match=r"does not have: service/0002_effect_notes\.sql"):
        await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)


async def test_a_migration_renamed_since_a_database_applied_it_is_known_by_its_old_name(
    database_url: str, tmp_path: Path
) -> None:
    await apply_migrations(database_url, "intake", INTAKE_MIGRATIONS)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO intake.schema_migrations (version)"
            " VALUES ('service/0695_subscription_cancel_at_period_end_requested.sql')"
        )
    finally:
        await conn.close()
    other_instance = await asyncpg.connect(database_url)
    try:
        await other_instance.execute(_TAKE_MIGRATION_LOCK, MIGRATION_LOCKS, "intake")
        # Up to date: it starts at once, without the lock, though the old name has no checksum.
        assert await asyncio.wait_for(apply_migrations(database_url, "intake", INTAKE_MIGRATIONS), timeout=5) == []
    finally:
        await other_instance.close()


async def test_a_migration_edited_after_it_ran_is_refused_and_named(database_url: str, tmp_path: Path) -> None:
    """Its change never reached the databases that ran it: they and new ones differ, silently."""
    migrations = _copy_of_probe_migrations(tmp_path / "migrations")
    await apply_migrations(database_url, PROBE, migrations)
    edited = migrations / "0001_effects.sql"
    edited.write_text(edited.read_text() + "\nALTER TABLE effects ADD COLUMN note text;\n")

    with pytest.raises(MigrationsRefused, match=r"changed since they were applied: service/0001_effects\.sql"):
        await apply_migrations(database_url, PROBE, migrations)


async def test_a_checkout_with_other_line_endings_is_the_same_migration(database_url: str, tmp_path: Path) -> None:
    """A checkout that turned line ends into CRLF (git's autocrlf on Windows) holds the files that ran: its start
    is not refused as if they had been edited."""
    migrations = _copy_of_probe_migrations(tmp_path / "migrations")
    await apply_migrations(database_url, PROBE, migrations)
    for path in migrations.glob("*.sql"):
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    assert await apply_migrations(database_url, PROBE, migrations) == []


async def test_migrations_applied_before_checksums_were_kept_get_theirs_then_are_checked(
    database_url: str, tmp_path: Path
) -> None:
    migrations = _copy_of_probe_migrations(tmp_path / "migrations")
    await apply_migrations(database_url, PROBE, migrations)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE probe.schema_migrations SET checksum = NULL")  # as an older runner left them
        assert await apply_migrations(database_url, PROBE, migrations) == []
        assert await conn.fetchval("SELECT count(*) FROM probe.schema_migrations WHERE checksum IS NULL") == 0
    finally:
        await conn.close()
    edited = migrations / "0001_effects.sql"
    edited.write_text(edited.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationsRefused, match="0001_effects"):
        await apply_migrations(database_url, PROBE, migrations)


async def test_a_migration_waiting_on_a_table_another_session_holds_fails_the_start_and_says_why(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    later = _copy_of_probe_migrations(tmp_path / "later")
    (later / "0002_effect_notes.sql").write_text("ALTER TABLE effects ADD COLUMN note text;")
    monkeypatch.setattr(migrations_runner, "MIGRATION_LOCK_TIMEOUT_SECONDS", 1)
    stray = await asyncpg.connect(database_url)
    try:
        await stray.execute("BEGIN; LOCK TABLE probe.effects IN ACCESS SHARE MODE")  # e.g. an operator's psql

        with pytest.raises(MigrationsRefused, match=r"0002_effect_notes\.sql waited 1 s for a table"):
            await asyncio.wait_for(apply_migrations(database_url, PROBE, later), timeout=20)
        await stray.execute("ROLLBACK")
        assert await apply_migrations(database_url, PROBE, later) == ["service/0002_effect_notes.sql"]
    finally:
        await stray.close()


async def _applied_versions(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM probe.schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


async def test_a_migration_is_refused_while_an_old_instance_of_the_service_is_connected(
    database_url: str, tmp_path: Path
) -> None:
    """An old instance writing through a migration writes what the new schema no longer counts (intake's ledger
    entries without their totals after 0861): the new version refuses to migrate until every old one is stopped.
    Sessions of other services, the command line's and an operator's are not the old version's."""
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    later = _copy_of_probe_migrations(tmp_path / "later")
    (later / "0002_effect_notes.sql").write_text("ALTER TABLE effects ADD COLUMN note text;")
    old_instance = await create_pool(database_url, PROBE, max_size=2)
    others = [
        await create_pool(database_url, "intake", max_size=1),
        await asyncpg.connect(database_url, server_settings=session_settings("refundflow-cli")),
        await asyncpg.connect(database_url),  # an operator's psql
    ]
    try:
        with pytest.raises(MigrationsRefused, match=r"1 session of 'refundflow-probe'.*Stop every instance"):
            await apply_migrations(database_url, PROBE, later)
        assert "service/0002_effect_notes.sql" not in await _applied_versions(database_url)

        # A restart or another instance with nothing to run starts beside it, as scaling out does.
        assert await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS) == []

        await old_instance.close()
        assert await apply_migrations(database_url, PROBE, later) == ["service/0002_effect_notes.sql"]
    finally:
        await old_instance.close()  # closing twice does nothing
        await others[0].close()
        for conn in others[1:]:
            await conn.close()


async def test_new_instances_starting_together_migrate_once_and_none_refuses_another(
    database_url: str, tmp_path: Path
) -> None:
    """They wait in turn for the schema's lock: the first runs the migrations, the next find nothing to run and
    start beside it (its pool open by then)."""
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    later = _copy_of_probe_migrations(tmp_path / "later")
    (later / "0002_effect_notes.sql").write_text("SELECT pg_sleep(1); ALTER TABLE effects ADD COLUMN note text;")
    pools: list[asyncpg.Pool] = []

    async def start_instance() -> list[str]:
        applied = await apply_migrations(database_url, PROBE, later)
        pools.append(await create_pool(database_url, PROBE, max_size=1))  # as ServiceRuntime.open does next
        return applied

    try:
        started = await asyncio.wait_for(asyncio.gather(*(start_instance() for _ in range(3))), timeout=30)
    finally:
        for pool in pools:
            await pool.close()
    assert sorted(started) == [[], [], ["service/0002_effect_notes.sql"]]


async def test_an_old_instance_starting_while_a_migration_runs_undoes_it_and_the_start_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    """The old version's own start-up check read the schema before the migration committed, so it passed."""
    await apply_migrations(database_url, PROBE, PROBE_MIGRATIONS)
    later = _copy_of_probe_migrations(tmp_path / "later")
    (later / "0002_effect_notes.sql").write_text("ALTER TABLE effects ADD COLUMN note text; SELECT pg_sleep(2);")
    migrating = asyncio.create_task(apply_migrations(database_url, PROBE, later))
    watcher = await asyncpg.connect(database_url)
    old_instance: asyncpg.Pool | None = None
    try:

        async def sleeping() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' AND pid <> pg_backend_pid()"
                )
            )

        await eventually(sleeping, timeout=10)
        old_instance = await create_pool(database_url, PROBE, max_size=1)

        with pytest.raises(MigrationsRefused, match=r"nothing of service/0002_effect_notes\.sql was applied"):
            await asyncio.wait_for(migrating, timeout=20)
        columns = await watcher.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'probe' AND column_name = 'note'"
        )
        assert columns == 0
    finally:
        if old_instance is not None:
            await old_instance.close()
        await watcher.close()
    assert "service/0002_effect_notes.sql" not in await _applied_versions(database_url)
