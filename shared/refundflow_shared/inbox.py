"""Idempotent consumers: a handled event is recorded in the same transaction as its effect."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

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


async def claim_many(conn: asyncpg.Connection, consumer: str, events: Sequence[Event]) -> set[uuid.UUID]:
    """Record that ``consumer`` handles ``events`` (one statement); the ids it had not handled before."""
    assert conn.is_in_transaction(), "the inbox rows must commit with the handlers' effects"
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id, event_type) SELECT $1, id, type FROM unnest($2::uuid[], $3::text[])"
        " AS e(id, type) ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        [event.id for event in events],
        [event.type.value for event in events],
    )
    return {row["event_id"] for row in rows}
