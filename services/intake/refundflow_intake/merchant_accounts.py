"""Merchants and their API keys, with their SQL. A key is shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import asyncpg

from refundflow_intake.domain import (
    ApiKeyNotFound,
    ApiKeysManagedByOwners,
    LastApiKey,
    MerchantNotFound,
    TooManyApiKeys,
)

Row = dict[str, Any]
_KEY_COLUMNS = "id, name, created_at, revoked_at"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def hash_api_key(api_key: str) -> bytes:
    # API keys are long random secrets: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(api_key.encode()).digest()


async def merchant_exists(conn: asyncpg.Connection, merchant_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1)", merchant_id))


async def lock_merchant(conn: asyncpg.Connection, merchant_id: str) -> None:
    """Serialise changes to what a merchant may have a limited number of (live keys, endpoints, policy overrides)."""
    if await conn.fetchval("SELECT id FROM merchants WHERE id = $1 FOR UPDATE", merchant_id) is None:
        raise MerchantNotFound(f"no merchant {merchant_id}")


async def create_merchant(conn: asyncpg.Connection, name: str) -> tuple[str, Row]:
    """A new merchant and its first API key (with ``api_key``, its secret: returned once, stored only as a hash)."""
    merchant_id = new_id("mer")
    await conn.execute("INSERT INTO merchants (id, name) VALUES ($1, $2)", merchant_id, name)
    return merchant_id, await create_api_key(conn, merchant_id, name="default", max_live=None)


async def first_api_key_id(conn: asyncpg.Connection, merchant_id: str) -> str:
    """The id of the key the merchant was created with (revoked or not)."""
    key_id: str = await conn.fetchval(
        "SELECT id FROM api_keys WHERE merchant_id = $1 ORDER BY created_at, id LIMIT 1", merchant_id
    )
    return key_id


async def create_api_key(
    conn: asyncpg.Connection, merchant_id: str, *, name: str | None, max_live: int | None, form_key: str | None = None
) -> Row:
    """Another key for the merchant (one per integration or person, so each can be revoked alone), while it has fewer
    than ``max_live`` live keys (None: the platform's, which issues a merchant that lost its keys a new one whatever
    it holds). ``form_key`` is the single-use key of the dashboard's form that asks for it: see ``api_key_made_by``."""
    await lock_merchant(conn, merchant_id)  # two creations at once cannot both take the last place
    if max_live is not None:
        live = await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE merchant_id = $1 AND revoked_at IS NULL", merchant_id
        )
        if live >= max_live:
            raise TooManyApiKeys(f"a merchant has at most {max_live} live API keys: revoke one first")
    secret = f"rfk_{secrets.token_urlsafe(32)}"
    row = await conn.fetchrow(
        "INSERT INTO api_keys (id, merchant_id, key_hash, name, form_key) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_KEY_COLUMNS}",
        new_id("key"),
        merchant_id,
        hash_api_key(secret),
        name,
        form_key,
    )
    return {**dict(row), "api_key": secret}


async def api_key_made_by(conn: asyncpg.Connection, merchant_id: str, form_key: str) -> Row | None:
    """The key the dashboard form ``form_key`` already made (sent again by a double click or a reload), without its
    plaintext, which was on the first answer only: only its hash is kept. Call under ``lock_merchant``, so the same
    form sent at once waits for the first to commit."""
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE merchant_id = $1 AND form_key = $2", merchant_id, form_key
    )
    return dict(row) if row is not None else None


async def list_api_keys(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE merchant_id = $1 ORDER BY created_at, id", merchant_id
    )
    return [dict(r) for r in rows]


async def revoke_api_key(conn: asyncpg.Connection, merchant_id: str, key_id: str) -> Row:
    """Revoke one of the merchant's keys (a no-op when already revoked); never its last live key, which would
    lock the merchant out."""
    await lock_merchant(conn, merchant_id)
    key = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1 AND merchant_id = $2", key_id, merchant_id
    )
    if key is None:
        raise ApiKeyNotFound(f"no API key {key_id}")
    if key["revoked_at"] is not None:
        return dict(key)
    live = await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE merchant_id = $1 AND revoked_at IS NULL", merchant_id
    )
    if live <= 1:
        raise LastApiKey("this is your last live API key: create another before revoking it")
    row = await conn.fetchrow(f"UPDATE api_keys SET revoked_at = now() WHERE id = $1 RETURNING {_KEY_COLUMNS}", key_id)
    return dict(row)


async def has_joined_owner(conn: asyncpg.Connection, merchant_id: str) -> bool:
    """Whether an owner has joined (accepted the invite) and is still one: from then on, what keys may not be trusted
    with (the keys themselves, the approval rules) is the owners', in the dashboard. An owner who was invited but
    never joined does not count: nobody could sign in to do it."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM merchant_users WHERE merchant_id = $1 AND role = 'owner'"
            " AND removed_at IS NULL AND activated_at IS NOT NULL)",
            merchant_id,
        )
    )


async def check_keys_managed_by_keys(conn: asyncpg.Connection, merchant_id: str) -> None:
    """A merchant without people manages its keys with its keys (as before the dashboard); once an owner has joined,
    only owners do, so a leaked key cannot mint itself a twin or lock the team out."""
    if await has_joined_owner(conn, merchant_id):
        raise ApiKeysManagedByOwners("your API keys are managed by your owners in the dashboard (Settings)")


async def api_key_owner(conn: asyncpg.Connection, api_key: str) -> tuple[str, str] | None:
    """(merchant id, key id) of a live key, or None."""
    row = await conn.fetchrow(
        "SELECT merchant_id, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_api_key(api_key)
    )
    return (row["merchant_id"], row["id"]) if row else None
