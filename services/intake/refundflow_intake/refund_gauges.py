"""Refunds stuck at the provider, read once per metrics scrape (an index range on processing refunds)."""

from __future__ import annotations

import asyncpg

from refundflow_shared.metrics import REFUNDS_PROCESSING, REFUNDS_PROCESSING_OLDEST_SECONDS

_PROCESSING = """
SELECT count(*) AS processing,
       coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 AS oldest_seconds
FROM refunds WHERE status = 'processing'
"""


async def observe_processing_refunds(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_PROCESSING)
    REFUNDS_PROCESSING.set(row["processing"])
    REFUNDS_PROCESSING_OLDEST_SECONDS.set(row["oldest_seconds"])
