"""A sliding-window limit kept in PostgreSQL, so that every intake replica counts the same attempts."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

import asyncpg
from fastapi import Request

from refundflow_intake.domain import DomainError
from refundflow_shared.database import RATE_LIMIT_LOCKS


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


def client_bucket(request: Request) -> str:
    """The client's address as every per-address limit counts it (sign-in, resets, the portal's form): an IPv6
    client by its /64, the block one subscriber gets (each of its addresses counted alone would give one client 2**64
    budgets), and an IPv4 address however it is written."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


async def take(pool: asyncpg.Pool, bucket: str, *, limit: int, window: timedelta, now: datetime) -> int:
    """Count one attempt in ``bucket``; raise RateLimited when more than ``limit`` fall in ``window``. Returns the
    attempt's id, for ``give_back``.

    Runs in its own committed transaction: a refused or failed attempt still counts, unless given back.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", RATE_LIMIT_LOCKS, bucket)
        oldest: datetime | None = await conn.fetchval(
            "SELECT min(at) FROM (SELECT at FROM rate_limit_attempts WHERE bucket = $1 AND at > $2"
            " ORDER BY at DESC LIMIT $3) recent HAVING count(*) >= $3",
            bucket,
            now - window,
            limit,
        )
        if oldest is not None:
            retry_after = max(int((oldest + window - now).total_seconds()) + 1, 1)
            raise RateLimited(f"too many attempts: try again in {retry_after} seconds", retry_after)
        attempt: int = await conn.fetchval(
            "INSERT INTO rate_limit_attempts (bucket, at) VALUES ($1, $2) RETURNING id", bucket, now
        )
        await conn.execute("DELETE FROM rate_limit_attempts WHERE bucket = $1 AND at <= $2", bucket, now - window)
    return attempt


async def give_back(pool: asyncpg.Pool, attempt: int) -> None:
    """Count no more an attempt ``take`` counted (it did nothing that the limit is there to bound)."""
    await pool.execute("DELETE FROM rate_limit_attempts WHERE id = $1", attempt)
