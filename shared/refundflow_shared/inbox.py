"""Idempotent consumers: a handled event is recorded in the same transaction as its effect."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from refundflow_shared.events import Event


def message_digest(source: str, key: bytes | None, value: bytes | None) -> bytes:
    """What tells a redelivery from another message under the same event id: its source, key and value, as read
    (bytes already in hand: no encoding again). Each part is length-prefixed, so no two messages share one."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (source.encode(), key, value):
        if part is None:
            digest.update(b"\xff" * 8)  # no length is this
        else:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.digest()


# One statement: the claim, and what the inbox held for these ids before it (the main query sees the snapshot the
# statement started with, not the rows its INSERT adds), so a reused id costs no round trip to tell apart.
_CLAIM = """
WITH claimed AS (
    INSERT INTO inbox (consumer, event_id, event_type, digest)
    SELECT $1, id, type, digest FROM unnest($2::uuid[], $3::text[], $4::bytea[]) AS e(id, type, digest)
    ON CONFLICT DO NOTHING
    RETURNING event_id, event_type, digest
)
SELECT event_id, event_type, digest, true AS fresh FROM claimed
UNION ALL
SELECT event_id, event_type, digest, false FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])
"""


@dataclass(frozen=True)
class Recorded:
    """What the inbox holds of a claimed event id: its type and message digest (None: claimed before digests)."""

    event_type: str
    digest: bytes | None


@dataclass(frozen=True)
class Claims:
    """What the inbox holds for a batch's event ids, once claimed."""

    fresh: dict[uuid.UUID, Recorded]  # not handled before: claimed now (one of each id: the first)
    handled: dict[uuid.UUID, Recorded]  # handled before

    def is_claim_of(self, event: Event, digest: bytes) -> bool:
        """Whether ``event`` (its message's ``digest``) is the one its fresh id was claimed for."""
        return self.fresh.get(event.id) == Recorded(event.type.value, digest)

    def reuse_of(self, event: Event, digest: bytes) -> str | None:
        """Why ``event`` is not a redelivery but another event with a reused id (handled, or claimed, as another
        type or for another message), never to be skipped silently. None for a fresh event or a true duplicate."""
        recorded = self.handled.get(event.id) or self.fresh.get(event.id)
        # Neither: another consumer instance claimed it after this statement began (a rebalance) and committed;
        # what it holds is not seen, so it is taken for a duplicate.
        if recorded is None:
            return None
        if recorded.event_type != event.type.value:
            return f"its event id was handled before as a {recorded.event_type} event"
        if recorded.digest is not None and recorded.digest != digest:
            return "its event id was handled before for another message (another source, key or value)"
        return None


async def claim_many(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event], digests: Sequence[bytes]
) -> Claims:
    """Record that ``consumer`` handles ``events`` (one statement; ``digests``: their messages'); which it had not
    handled before, and what it holds of the others."""
    assert conn.is_in_transaction(), "the inbox rows must commit with the handlers' effects"
    rows = await conn.fetch(
        _CLAIM, consumer, [event.id for event in events], [event.type.value for event in events], list(digests)
    )
    fresh = {row["event_id"]: Recorded(row["event_type"], row["digest"]) for row in rows if row["fresh"]}
    handled = {row["event_id"]: Recorded(row["event_type"], row["digest"]) for row in rows if not row["fresh"]}
    return Claims(fresh, handled)
