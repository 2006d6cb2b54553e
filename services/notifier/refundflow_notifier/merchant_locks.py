"""A lock per merchant, taken by its configurations (a webhook endpoint's, its notification settings) and shared by
the batches handling its events: configurations are keyed by merchant, a refund's events by payment, so they travel
on other partitions in no order and two transactions may handle them at once. Each takes the lock in a statement of
its own, before it reads what the other writes: one that committed while this waited is read by the next statement,
and one that waits for this reads what this wrote once it commits. Else both could read before the other committed
(an event finds no endpoint, the endpoint no event; an alert no settings, the settings no alert)."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from refundflow_shared.database import MERCHANT_CONFIGURATION_LOCKS


async def configuring(conn: asyncpg.Connection, merchant_id: str) -> None:
    """Held until the caller's transaction ends, by a configuration of the merchant's."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MERCHANT_CONFIGURATION_LOCKS, merchant_id)


async def handling_events_of(conn: asyncpg.Connection, merchant_ids: Iterable[str]) -> None:
    """Shared until the caller's transaction ends, by a batch handling these merchants' events."""
    await conn.execute(_SHARE, MERCHANT_CONFIGURATION_LOCKS, list(merchant_ids))


# In one order (the hashes'), as every batch takes them.
_SHARE = """
SELECT pg_advisory_xact_lock_shared($1, h)
FROM (SELECT DISTINCT hashtext(m) AS h FROM unnest($2::text[]) m ORDER BY h) s
"""
