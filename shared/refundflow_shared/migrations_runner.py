"""SQL migrations: each service owns one PostgreSQL schema; files apply in name order, once each.

A schema is checked before anything runs: a build refuses to start on one that holds migrations it does not know
(a newer build migrated it: this one would write what the newer schema no longer takes), or whose applied files it
holds changed (the schema is not what the file now says). Each applied file's SHA-256 is kept for this. A migration
is refused while an instance of the service is connected: the old version, writing through it, would write what the
new schema no longer takes or counts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg
import structlog

from refundflow_shared.database import MIGRATION_LOCKS, connect, service_application_name

log = structlog.get_logger(__name__)

MESSAGING_MIGRATIONS = Path(__file__).parent / "migrations"
# How long a migration's statement waits for a table another session holds before the start fails: the old version
# is stopped during an upgrade, so such a wait is a stray session, which a start should name, not wait out.
MIGRATION_LOCK_TIMEOUT_SECONDS = 30
# Files that were renamed or removed after some databases applied them, per schema: known, never run again.
RETIRED_MIGRATIONS = {
    "intake": frozenset({"service/0695_subscription_cancel_at_period_end_requested.sql"}),  # now 0696
    "notifier": frozenset(
        {
            "service/0800_messages_in_order.sql",  # reverted; its index is harmless
            "service/0963_webhook_events_without_portal_links.sql",  # never released; webhook_store._as_sent instead
        }
    ),
}


class MigrationsRefused(RuntimeError):
    """The schema is not one this build can run on: what it says, and what to do."""


async def apply_migrations(dsn: str, schema: str, service_migrations: Path, *, backbone: bool = True) -> list[str]:
    """Bring ``schema`` up to date: the backbone's tables (unless ``backbone`` is false: a schema without outbox
    or inbox, such as the command line's), then the service's own. Returns what ran; raises ``MigrationsRefused``
    when the schema holds a migration this build does not know, or one whose file has changed since it ran.

    A schema already up to date starts at once: its lock is taken only when something is to run. Each schema has a
    lock of its own (schemas are disjoint), so a long migration of another service never holds this one's start-up."""
    files = {f"messaging/{p.name}": p for p in sorted(MESSAGING_MIGRATIONS.glob("*.sql"))} if backbone else {}
    files |= {f"service/{p.name}": p for p in sorted(service_migrations.glob("*.sql"))}
    checksums = {version: migration_checksum(path) for version, path in files.items()}
    # Named apart from the service's sessions: instances starting together wait here for each other, not refused.
    conn = await connect(dsn, server_settings={"application_name": f"{service_application_name(schema)}-migrations"})
    try:
        applied = await _applied(conn, schema)
        _check(schema, applied, checksums)
        if all(applied.get(version) is not None for version in files):  # each applied, its checksum kept
            return []
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", MIGRATION_LOCKS, schema)
        try:
            await conn.execute(f"SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT_SECONDS}s'")  # not the advisory lock's
            return await _apply(conn, schema, files, checksums)
        finally:
            await conn.execute("RESET lock_timeout")
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", MIGRATION_LOCKS, schema)
    finally:
        await conn.close()


def migration_checksum(path: Path) -> str:
    """The SHA-256 a migration file is kept and checked by (``schema_migrations.checksum``)."""
    # Of the text with LF line ends: a checkout that made them CRLF (autocrlf) holds the same migration.
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


async def _applied(conn: asyncpg.Connection, schema: str) -> dict[str, str | None]:
    """What ``schema`` has applied (nothing, before its first migration), each with its file's checksum (None:
    applied before checksums were kept), read without the lock."""
    table = await conn.fetchval("SELECT to_regclass(format('%I.schema_migrations', $1::text))", schema)
    if table is None:
        return {}
    # Through to_jsonb: the checksum column is added by the first run that takes the lock.
    rows = await conn.fetch(
        f"SELECT version, to_jsonb(m) ->> 'checksum' AS checksum FROM \"{schema}\".schema_migrations m"
    )
    return {r["version"]: r["checksum"] for r in rows}


def _check(schema: str, applied: dict[str, str | None], checksums: dict[str, str]) -> None:
    """Refuse a schema with migrations this build does not know, or whose files changed since they ran."""
    unknown = sorted(applied.keys() - checksums.keys() - RETIRED_MIGRATIONS.get(schema, frozenset()))
    if unknown:
        raise MigrationsRefused(
            f"schema {schema!r} holds migrations this build does not have: {', '.join(unknown)}. A newer version"
            " migrated it; start that version (or restore the database from a backup taken before its upgrade)."
        )
    changed = sorted(
        v for v, checksum in applied.items() if checksum is not None and checksum != checksums.get(v, checksum)
    )
    if changed:
        raise MigrationsRefused(
            f"schema {schema!r}: migrations changed since they were applied: {', '.join(changed)}. A migration that"
            " ran is never edited (the schema is what it said then): put the file back as it was and write the change"
            " as a new migration."
        )


async def _apply(conn: asyncpg.Connection, schema: str, files: dict[str, Path], checksums: dict[str, str]) -> list[str]:
    """Under the lock: what is still to run (another instance may have run it meanwhile), in order, each recorded
    with its checksum. ``files``: each version (origin/name) with its file."""
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    done = await _applied(conn, schema)
    _check(schema, done, checksums)
    # Applied before checksums were kept: the files as they are now are taken as those that ran.
    await conn.execute(
        "UPDATE schema_migrations m SET checksum = f.checksum"
        " FROM unnest($1::text[], $2::text[]) AS f (version, checksum) WHERE m.version = f.version"
        " AND m.checksum IS NULL",
        list(checksums),
        list(checksums.values()),
    )
    pending = [version for version in files if version not in done]
    if pending:  # nothing to run (a restart, scaling out): an instance running beside this one is no old version
        await _refuse_while_instances_run(conn, schema, pending[0])
    applied: list[str] = []
    for version in pending:
        try:
            async with conn.transaction():
                await conn.execute(files[version].read_text())
                # An old instance that started meanwhile passed its own check (this file was not recorded yet).
                await _refuse_while_instances_run(conn, schema, version)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", version, checksums[version]
                )
        except asyncpg.LockNotAvailableError as exc:
            raise MigrationsRefused(
                f"schema {schema!r}: migration {version} waited {MIGRATION_LOCK_TIMEOUT_SECONDS} s for a table"
                f" another session holds ({exc}). Find that session (pg_stat_activity, pg_locks), end it, and start"
                " again: nothing of this migration was applied."
            ) from exc
        applied.append(version)
        log.info("migration_applied", schema=schema, version=version)
    return applied


async def _refuse_while_instances_run(conn: asyncpg.Connection, schema: str, version: str) -> None:
    """Refuse to run ``version`` while a session of the service other than the migrations' is connected: an instance
    of the old version (stopped before the new one migrates, README, Upgrading), or of this one, started beside it."""
    name = service_application_name(schema)
    sessions = await conn.fetch(
        "SELECT pid, coalesce(host(client_addr), 'local socket') AS client FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
        name,
    )
    if not sessions:
        return
    clients = sorted({s["client"] for s in sessions})
    log.error(
        "migrations_refused_instances_running", schema=schema, version=version, sessions=len(sessions), clients=clients
    )
    raise MigrationsRefused(
        f"schema {schema!r}: {len(sessions)} session{'s' if len(sessions) > 1 else ''} of {name!r} connected (from"
        f" {', '.join(clients)}): an instance of the service is running, and must not while it migrates. Stop every"
        " instance of the old version (scale it to 0; not a rolling update), then start this one again: nothing of"
        f" {version} was applied."
    )
