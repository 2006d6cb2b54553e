"""``Idempotency-Key`` on refund creation: a retried request returns the first result, never a second refund.

Each channel's keys are its own: a merchant's API key and the platform's ``refund.submit`` key never meet."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from refundflow_intake.domain import Channel, IdempotencyKeyReused


def fingerprint(body: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


async def claim(
    conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str, request_hash: bytes
) -> str | None:
    """None when this request is the key's first (go ahead); else the refund id the first one created.

    The insert waits on a concurrent first request with the same key until it commits or rolls back, so two
    racing retries cannot both create a refund. A first request that failed left nothing behind: its retry runs.
    """
    claimed = await conn.fetchval(
        "INSERT INTO idempotency_keys (merchant_id, channel, key, request_hash) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (merchant_id, channel, key) DO NOTHING RETURNING key",
        merchant_id,
        channel.value,
        key,
        request_hash,
    )
    if claimed is not None:
        return None
    earlier = await _first_use(conn, merchant_id, channel, key)
    assert earlier is not None  # the insert conflicted with it
    if bytes(earlier["request_hash"]) != request_hash:
        # The key is not quoted: the caller knows it (a command's answer names it), and quoted it can be 10× longer.
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body")
    refund_id: str = earlier["refund_id"]
    return refund_id


async def replayed_refund(
    conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str, request_hash: bytes
) -> str | None:
    """The refund the key's first request made, when this is that request again; else None (a first request, or
    another request under the key, which ``claim`` answers). Read only: a retry is answered before anything else is
    spent on it, the portal's rate limits among them."""
    earlier = await _first_use(conn, merchant_id, channel, key)
    if earlier is None or bytes(earlier["request_hash"]) != request_hash:
        return None
    refund_id: str | None = earlier["refund_id"]
    return refund_id


async def _first_use(conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str) -> asyncpg.Record | None:
    """What the key's first request fixed: its body's hash, and the refund it made (None until it committed)."""
    return await conn.fetchrow(
        "SELECT request_hash, refund_id FROM idempotency_keys WHERE merchant_id = $1 AND channel = $2 AND key = $3",
        merchant_id,
        channel.value,
        key,
    )


async def remember(conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str, refund_id: str) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET refund_id = $4 WHERE merchant_id = $1 AND channel = $2 AND key = $3",
        merchant_id,
        channel.value,
        key,
        refund_id,
    )
