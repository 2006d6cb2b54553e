"""SQL migrations: each service owns one PostgreSQL schema; files apply in name order, once each."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MESSAGING_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_201_755_101  # one advisory lock for all schemas: services may start at once


async def apply_migrations(dsn: str, schema: str, service_migrations: Path, *, backbone: bool = True) -> list[str]:
    """Bring ``schema`` up to date: the backbone's tables (unless ``backbone`` is false: a schema without outbox
    or inbox, such as the command line's), then the service's own. Returns what ran."""
    files = [("messaging", p) for p in sorted(MESSAGING_MIGRATIONS.glob("*.sql"))] if backbone else []
    files += [("service", p) for p in sorted(service_migrations.glob("*.sql"))]
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for origin, path in files:
            version = f"{origin}/{path.name}"
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
            log.info("migration_applied", schema=schema, version=version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
    return applied
