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


async def release(conn: asyncpg.Connection, consumer: str, event_ids: Sequence[uuid.UUID]) -> None:
    """Take back claims made in this transaction for events that were not handled after all."""
    assert conn.is_in_transaction(), "only claims of the transaction itself may be taken back"
    await conn.execute(
        "DELETE FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])", consumer, list(event_ids)
    )
