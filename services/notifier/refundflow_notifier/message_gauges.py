"""Messages held up (the SMTP relay away or refusing us, the worker stalled), read once per metrics scrape (one
probe of the due index)."""

from __future__ import annotations

import asyncpg

from refundflow_shared.metrics import MESSAGES_OLDEST_DUE_SECONDS

_OLDEST_DUE = """
SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
FROM messages WHERE status = 'pending' AND next_attempt_at <= now()
"""


async def observe_due_messages(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        MESSAGES_OLDEST_DUE_SECONDS.set(await conn.fetchval(_OLDEST_DUE))
