"""With BENCH_SQL_PROFILE=1 (embedded PostgreSQL only), what SQL the burst ran: every statement with its calls and
executor time per lifecycle, from pg_stat_statements, in ``sql-profile.txt``. A profiling aid, not a figure."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

ENABLED = os.environ.get("BENCH_SQL_PROFILE") == "1"

_STATEMENTS = """
SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%' ORDER BY calls DESC, total_exec_time DESC
"""


async def reset(database_url: str) -> None:
    if not ENABLED:
        return
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def write(database_url: str, lifecycles: int, path: Path) -> None:
    if not ENABLED:
        return
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(_STATEMENTS)
    finally:
        await conn.close()
    calls = sum(r["calls"] for r in rows)
    lines = [
        f"{calls / lifecycles:.1f} statements per lifecycle over {lifecycles} lifecycles",
        "calls/lc  exec ms/lc  query",
    ]
    lines += [
        f"{r['calls'] / lifecycles:8.2f}  {r['total_exec_time'] / lifecycles:9.3f}  {r['query'][:220]}" for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")
