"""SQL migrations: each service owns one PostgreSQL schema; files apply in name order, once each."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MESSAGING_MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 7_201_755_101  # one advisory lock for all schemas: services may start at once


async def apply_migrations(dsn: str, schema: str, service_migrations: Path, *, backbone: bool = True) -> list[str]:
    """Bring ``schema`` up to date: the backbone's tables (unless ``backbone`` is false: a schema without outbox
    or inbox, such as the command line's), then the service's own. Returns what ran.

    A schema already up to date starts at once: the lock, shared by every schema, is taken only when something is
    to run, so a long migration of another service does not hold this one's start-up."""
    files = {f"messaging/{p.name}": p for p in sorted(MESSAGING_MIGRATIONS.glob("*.sql"))} if backbone else {}
    files |= {f"service/{p.name}": p for p in sorted(service_migrations.glob("*.sql"))}
    conn = await asyncpg.connect(dsn)
    try:
        if files.keys() <= await _applied(conn, schema):
            return []
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _apply(conn, schema, files)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def _applied(conn: asyncpg.Connection, schema: str) -> set[str]:
    """What ``schema`` has applied (nothing, before its first migration), read without the lock."""
    table = await conn.fetchval("SELECT to_regclass(format('%I.schema_migrations', $1::text))", schema)
    if table is None:
        return set()
    return {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}


async def _apply(conn: asyncpg.Connection, schema: str, files: dict[str, Path]) -> list[str]:
    """Under the lock: what is still to run (another instance may have run it meanwhile), in order. ``files``: each
    version (origin/name) with its file."""
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    applied: list[str] = []
    for version, path in files.items():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        applied.append(version)
        log.info("migration_applied", schema=schema, version=version)
    return applied
