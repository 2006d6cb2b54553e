"""``Idempotency-Key`` on creation: a retried request returns the first result, never a second refund, merchant or
webhook endpoint.

A key's first request claims it (an insert that waits on a concurrent first request with the same key until that
one commits or rolls back), then records what it made; a later request with the key and the same body is answered
what the first made, one with another body is refused. Each channel's refund keys are their own: a merchant's API
key and the platform's ``refund.submit`` key never meet. The platform's keys for new merchants belong to no merchant
and are kept apart (``merchant_creation_keys``)."""

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
    """None when this request is the key's first (go ahead); else the id of what the first one created (a refund,
    or a webhook endpoint: the same body cannot ask for both).

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
    _check_same_request(earlier["request_hash"], request_hash)
    made_id: str = earlier["made_id"]
    return made_id


def _check_same_request(first_hash: bytes, request_hash: bytes) -> None:
    if bytes(first_hash) != request_hash:
        # The key is not quoted: the caller knows it (a command's answer names it), and quoted it can be 10× longer.
        raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body")


async def replayed_refund(
    conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str, request_hash: bytes
) -> str | None:
    """The refund the key's first request made, when this is that request again; else None (a first request, or
    another request under the key, which ``claim`` answers). Read only: a retry is answered before anything else is
    spent on it, the portal's rate limits among them."""
    earlier = await _first_use(conn, merchant_id, channel, key)
    if earlier is None or bytes(earlier["request_hash"]) != request_hash:
        return None
    refund_id: str | None = earlier["made_id"]
    return refund_id


async def _first_use(conn: asyncpg.Connection, merchant_id: str, channel: Channel, key: str) -> asyncpg.Record | None:
    """What the key's first request fixed: its body's hash, and what it made (None until it committed)."""
    return await conn.fetchrow(
        "SELECT request_hash, coalesce(refund_id, webhook_endpoint_id, customer_erasure_id) AS made_id"
        " FROM idempotency_keys"
        " WHERE merchant_id = $1 AND channel = $2 AND key = $3",
        merchant_id,
        channel.value,
        key,
    )


async def remember(
    conn: asyncpg.Connection,
    merchant_id: str,
    channel: Channel,
    key: str,
    *,
    refund_id: str | None = None,
    webhook_endpoint_id: str | None = None,
    customer_erasure_id: str | None = None,
) -> None:
    """What the key's first request made: a refund, a webhook endpoint or a customer's erasure."""
    await conn.execute(
        "UPDATE idempotency_keys SET refund_id = $4, webhook_endpoint_id = $5, customer_erasure_id = $6"
        " WHERE merchant_id = $1 AND channel = $2 AND key = $3",
        merchant_id,
        channel.value,
        key,
        refund_id,
        webhook_endpoint_id,
        customer_erasure_id,
    )


async def claim_merchant_creation(conn: asyncpg.Connection, key: str, request_hash: bytes) -> str | None:
    """``claim`` for the platform's key of a new merchant: None when this request is the key's first (go ahead);
    else the merchant the first one created."""
    claimed = await conn.fetchval(
        "INSERT INTO merchant_creation_keys (key, request_hash) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        " RETURNING key",
        key,
        request_hash,
    )
    if claimed is not None:
        return None
    earlier = await conn.fetchrow("SELECT request_hash, merchant_id FROM merchant_creation_keys WHERE key = $1", key)
    assert earlier is not None  # the insert conflicted with it
    _check_same_request(earlier["request_hash"], request_hash)
    merchant_id: str = earlier["merchant_id"]
    return merchant_id


async def remember_merchant_creation(conn: asyncpg.Connection, key: str, merchant_id: str) -> None:
    await conn.execute("UPDATE merchant_creation_keys SET merchant_id = $2 WHERE key = $1", key, merchant_id)
