"""Idempotent consumers: a handled event is recorded in the same transaction as its effect."""

from __future__ import annotations

import asyncpg

from refundflow_shared.events import Event


async def claim(conn: asyncpg.Connection, consumer: str, event: Event) -> bool:
    """Record that ``consumer`` handles ``event``; False when it already did (a redelivery)."""
    assert conn.is_in_transaction(), "the inbox row must commit with the handler's effect"
    status = await conn.execute(
        "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        consumer,
        event.id,
        event.type.value,
    )
    return bool(status == "INSERT 0 1")
