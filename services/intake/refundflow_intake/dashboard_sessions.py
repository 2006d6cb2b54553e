"""Signed-in browsers, kept server-side: the cookie carries a random id, the database its digest, the role is
read afresh on every request (a removed member or a changed role takes effect at once). Each session has its
own CSRF token (a synchronizer token): a form is accepted only with the token of the session that posts it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from refundflow_intake.domain import DomainError
from refundflow_intake.roles import Role

MAX_SESSION_ID_LENGTH = 100


class CsrfRejected(DomainError):
    """A form without the token of the session posting it (or, before sign-in, of the pre-session)."""

    code = "csrf_token_invalid"
    in_api = False


@dataclass(frozen=True)
class SignedIn:
    """Who a session belongs to, as of this request."""

    user_id: str
    merchant_id: str
    merchant_name: str
    email: str
    display_name: str | None
    role: Role
    csrf_token: str

    @property
    def name(self) -> str:
        return self.display_name or self.email

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


async def start(conn: asyncpg.Connection, user_id: str, *, now: datetime, lasts: timedelta) -> str:
    """A new session (a new id, never one the browser brought): its id, for the cookie."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO dashboard_sessions (id_hash, user_id, csrf_token, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        _digest(session_id),
        user_id,
        secrets.token_urlsafe(32),
        now,
        now + lasts,
    )
    return session_id


async def signed_in(conn: asyncpg.Connection, session_id: str, *, now: datetime) -> SignedIn | None:
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return None
    row = await conn.fetchrow(
        "SELECT u.id, u.merchant_id, m.name AS merchant_name, u.email, u.display_name, u.role, s.csrf_token"
        " FROM dashboard_sessions s JOIN merchant_users u ON u.id = s.user_id JOIN merchants m ON m.id = u.merchant_id"
        " WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.removed_at IS NULL AND u.password_hash IS NOT NULL",
        _digest(session_id),
        now,
    )
    if row is None:
        return None
    return SignedIn(
        user_id=row["id"],
        merchant_id=row["merchant_id"],
        merchant_name=row["merchant_name"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        csrf_token=row["csrf_token"],
    )


async def end(conn: asyncpg.Connection, session_id: str) -> None:
    await conn.execute("DELETE FROM dashboard_sessions WHERE id_hash = $1", _digest(session_id[:MAX_SESSION_ID_LENGTH]))


async def end_all(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute("DELETE FROM dashboard_sessions WHERE user_id = $1", user_id)
