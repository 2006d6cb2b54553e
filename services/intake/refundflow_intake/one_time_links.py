"""One-time links for people (invites, password resets): a random token in the URL, only its digest stored,
usable once and before it expires."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from refundflow_intake.domain import DomainError


class LinkPurpose(StrEnum):
    INVITE = "invite"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a purpose, not a password


class LinkNotUsable(DomainError):
    """Unknown, expired, already used, or revoked: the same answer for each, so nothing can be probed."""

    code = "link_not_usable"
    in_api = False


MAX_TOKEN_LENGTH = 100


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_link(
    conn: asyncpg.Connection, purpose: LinkPurpose, user_id: str, *, now: datetime, valid_for: timedelta
) -> tuple[str, datetime]:
    """A new link's token (shown once) and when it expires. Earlier unused links of the same purpose go."""
    await revoke_links(conn, user_id, purpose, now=now)
    token = secrets.token_urlsafe(32)
    expires_at = now + valid_for
    await conn.execute(
        "INSERT INTO one_time_links (token_hash, purpose, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        _digest(token),
        purpose.value,
        user_id,
        expires_at,
        now,
    )
    return token, expires_at


async def usable_link_owner(conn: asyncpg.Connection, token: str, purpose: LinkPurpose, *, now: datetime) -> str:
    """The user id a still-usable link is for (without using it), or LinkNotUsable."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise LinkNotUsable("this link is not valid")
    user_id: str | None = await conn.fetchval(
        "SELECT user_id FROM one_time_links WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL"
        " AND expires_at > $3",
        _digest(token),
        purpose.value,
        now,
    )
    if user_id is None:
        raise LinkNotUsable("this link was already used, has expired, or is not valid: ask for a new one")
    return user_id


async def has_usable_link(conn: asyncpg.Connection, user_id: str, purpose: LinkPurpose, *, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM one_time_links WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL"
            " AND expires_at > $3)",
            user_id,
            purpose.value,
            now,
        )
    )


async def use_link(conn: asyncpg.Connection, token: str, purpose: LinkPurpose, *, now: datetime) -> str:
    """Use the link once: the user id it is for. A second use, even at the same moment, is LinkNotUsable."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise LinkNotUsable("this link is not valid")
    user_id: str | None = await conn.fetchval(
        "UPDATE one_time_links SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL"
        " AND expires_at > $3 RETURNING user_id",
        _digest(token),
        purpose.value,
        now,
    )
    if user_id is None:
        raise LinkNotUsable("this link was already used, has expired, or is not valid: ask for a new one")
    return user_id


async def revoke_links(
    conn: asyncpg.Connection, user_id: str, purpose: LinkPurpose | None = None, *, now: datetime
) -> None:
    await conn.execute(
        "UPDATE one_time_links SET used_at = $3 WHERE user_id = $1 AND used_at IS NULL"
        " AND ($2::text IS NULL OR purpose = $2)",
        user_id,
        purpose.value if purpose else None,
        now,
    )
