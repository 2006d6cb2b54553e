"""With BENCH_SQL_PROFILE=1 (embedded PostgreSQL only), what SQL the burst ran: every statement with its calls,
executor and planning time per lifecycle and how often it was planned (plans per call: near 0 once PostgreSQL keeps a
generic plan for it, 1 when it plans it for each call's values), from pg_stat_statements, in ``sql-profile.txt``. A
profiling aid."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

ENABLED = os.environ.get("BENCH_SQL_PROFILE") == "1"

_STATEMENTS = """
SELECT calls, plans, total_exec_time, total_plan_time, regexp_replace(query, '\\s+', ' ', 'g') AS query
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
        "calls/lc  exec ms/lc  plan ms/lc  plans/call  query",
    ]
    for r in rows:
        calls, executing, planning = (r[k] / lifecycles for k in ("calls", "total_exec_time", "total_plan_time"))
        planned = r["plans"] / r["calls"] if r["calls"] else 0.0
        lines.append(f"{calls:8.2f}  {executing:9.3f}  {planning:9.3f}  {planned:10.2f}  {r['query'][:220]}")
    path.write_text("\n".join(lines) + "\n")
