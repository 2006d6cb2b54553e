"""Retention: rows that have served their purpose are deleted after an age, in small batches.

Each service lists what it keeps and for how long (``RetentionRule``); the runtime runs the job, on one instance
of a service at a time. Deleting in batches keeps every transaction short, so pruning never holds locks the live
work needs. A rule's age column wants an index (the inbox's and the outbox's have one), or every pass reads the
whole table to find the few old rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from refundflow_shared.database import RETENTION_LOCKS
from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetentionRule:
    """Delete rows of ``table`` whose ``age_column`` is older than ``keep_for`` (and that match ``where``)."""

    table: str
    age_column: str
    keep_for: timedelta
    where: str = "TRUE"


def deletion(rule: RetentionRule) -> str:
    """The statement that deletes a batch of what ``rule`` says is old enough ($1: its age, $2: the batch's size)."""
    return (
        f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {rule.table} WHERE {rule.age_column} < now() - $1::interval AND ({rule.where})"
        " LIMIT $2))"
    )


async def prune(pool: asyncpg.Pool, rule: RetentionRule, *, batch: int = 1000) -> int:
    """Delete what ``rule`` says is old enough; returns how many rows went."""
    sql = deletion(rule)
    deleted = 0
    while True:
        status = await pool.execute(sql, rule.keep_for, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


async def run_retention(pool: asyncpg.Pool, rules: list[RetentionRule], *, interval: float) -> None:
    """Prune every rule every ``interval`` seconds until cancelled."""
    while True:
        try:
            await prune_all(pool, rules)
        except RECOVERABLE as exc:
            log.warning("retention_failed", error=repr(exc))
        await asyncio.sleep(interval)


async def prune_all(pool: asyncpg.Pool, rules: list[RetentionRule]) -> dict[str, int] | None:
    """One pass over ``rules``, by one instance of the service at a time: None when another one is making it (the
    rows it deletes are those this one would look for). Returns how many rows went, per table."""
    async with pool.acquire() as conn, conn.transaction():
        # Held until the pass ends, while the batches commit one by one on other connections; named by the
        # service's schema: another service's pass goes on meanwhile.
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))", RETENTION_LOCKS):
            return None
        pruned: dict[str, int] = {}
        for rule in rules:
            try:
                pruned[rule.table] = deleted = await prune(pool, rule)
            except RECOVERABLE as exc:
                log.warning("retention_failed", table=rule.table, error=repr(exc))
                continue
            if deleted:
                log.info("retention_pruned", table=rule.table, rows=deleted)
        return pruned
