"""Retention: rows that have served their purpose are deleted after an age, in small batches.

Each service lists what it keeps and for how long (``RetentionRule``); the runtime runs the job. Deleting in
batches keeps every transaction short, so pruning never holds locks the live work needs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetentionRule:
    """Delete rows of ``table`` whose ``age_column`` is older than ``keep_for`` (and that match ``where``)."""

    table: str
    age_column: str
    keep_for: timedelta
    where: str = "TRUE"


async def prune(pool: asyncpg.Pool, rule: RetentionRule, *, batch: int = 1000) -> int:
    """Delete what ``rule`` says is old enough; returns how many rows went."""
    sql = (
        f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {rule.table} WHERE {rule.age_column} < now() - $1::interval AND ({rule.where})"
        " LIMIT $2))"
    )
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
        for rule in rules:
            try:
                deleted = await prune(pool, rule)
            except RECOVERABLE as exc:
                log.warning("retention_failed", table=rule.table, error=repr(exc))
                continue
            if deleted:
                log.info("retention_pruned", table=rule.table, rows=deleted)
        await asyncio.sleep(interval)
