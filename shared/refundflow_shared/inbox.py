"""Idempotent consumers: a handled event is recorded in the same transaction as its effect."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from refundflow_shared.events import Event

# One statement: the claim, and what the inbox held for these ids before it (the main query sees the snapshot the
# statement started with, not the rows its INSERT adds), so a reused id costs no round trip to tell apart.
_CLAIM = """
WITH claimed AS (
    INSERT INTO inbox (consumer, event_id, event_type)
    SELECT $1, id, type FROM unnest($2::uuid[], $3::text[]) AS e(id, type)
    ON CONFLICT DO NOTHING
    RETURNING event_id, event_type
)
SELECT event_id, event_type, true AS fresh FROM claimed
UNION ALL
SELECT event_id, event_type, false FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])
"""


@dataclass(frozen=True)
class Claims:
    """What the inbox holds for a batch's event ids, once claimed."""

    fresh: dict[uuid.UUID, str]  # not handled before: claimed now, as this type (one of each id: the first)
    handled: dict[uuid.UUID, str]  # handled before, as this type

    def reused_as(self, event: Event) -> str | None:
        """The other type ``event``'s id was handled (or claimed) as: not a redelivery but another event with a
        reused id, never to be skipped silently. None for a fresh event or a true duplicate."""
        recorded = self.handled.get(event.id) or self.fresh.get(event.id)
        # Neither: another consumer instance claimed it after this statement began (a rebalance) and committed;
        # its type is not seen, so it is taken for a duplicate.
        return recorded if recorded not in (None, event.type.value) else None


async def claim_many(conn: asyncpg.Connection, consumer: str, events: Sequence[Event]) -> Claims:
    """Record that ``consumer`` handles ``events`` (one statement); which it had not handled before, and as what
    type it handled the others."""
    assert conn.is_in_transaction(), "the inbox rows must commit with the handlers' effects"
    rows = await conn.fetch(_CLAIM, consumer, [event.id for event in events], [event.type.value for event in events])
    fresh = {row["event_id"]: row["event_type"] for row in rows if row["fresh"]}
    handled = {row["event_id"]: row["event_type"] for row in rows if not row["fresh"]}
    return Claims(fresh, handled)
