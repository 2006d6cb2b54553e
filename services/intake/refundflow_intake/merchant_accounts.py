"""Merchants and their API keys. A key is shown once and stored only as a hash."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import asyncpg

from refundflow_intake import repository
from refundflow_intake.domain import ApiKeyNotFound


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _new_secret() -> str:
    return f"rfk_{secrets.token_urlsafe(32)}"


async def create_merchant(conn: asyncpg.Connection, name: str) -> tuple[str, str]:
    """A new merchant and its first API key; the key is returned once and stored only as a hash."""
    merchant_id = new_id("mer")
    await repository.insert_merchant(conn, merchant_id, name)
    key = await create_api_key(conn, merchant_id, name="default")
    return merchant_id, key["api_key"]


async def create_api_key(conn: asyncpg.Connection, merchant_id: str, *, name: str | None) -> dict[str, Any]:
    """Another key for the merchant (one per integration or person, so each can be revoked alone)."""
    secret = _new_secret()
    key = await repository.insert_api_key(conn, new_id("key"), merchant_id, secret, name)
    return {**key, "api_key": secret}


async def revoke_api_key(conn: asyncpg.Connection, merchant_id: str, key_id: str) -> dict[str, Any]:
    key = await repository.revoke_api_key(conn, merchant_id, key_id)
    if key is None:
        raise ApiKeyNotFound(f"no API key {key_id}")
    return key
