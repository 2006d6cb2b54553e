"""SQL for intake's schema. Functions take the caller's connection, so the caller owns the transaction."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from refundflow_intake.domain import HOLDING_STATUSES, RefundStatus

Row = dict[str, Any]


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


async def insert_merchant(conn: asyncpg.Connection, merchant_id: str, name: str) -> None:
    await conn.execute("INSERT INTO merchants (id, name) VALUES ($1, $2)", merchant_id, name)


async def insert_api_key(conn: asyncpg.Connection, key_id: str, merchant_id: str, api_key: str) -> None:
    await conn.execute(
        "INSERT INTO api_keys (id, merchant_id, key_hash) VALUES ($1, $2, $3)",
        key_id,
        merchant_id,
        hash_api_key(api_key),
    )


async def api_key_owner(conn: asyncpg.Connection, api_key: str) -> tuple[str, str] | None:
    """(merchant id, key id) of a live key, or None."""
    row = await conn.fetchrow(
        "SELECT merchant_id, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_api_key(api_key)
    )
    return (row["merchant_id"], row["id"]) if row else None


async def insert_payment(conn: asyncpg.Connection, payment: Row) -> bool:
    """False when the merchant already registered this provider payment."""
    status = await conn.execute(
        "INSERT INTO payments (id, merchant_id, customer_email, amount, currency, provider_payment_id, paid_at,"
        " product_id, product_name, product_kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (merchant_id, provider_payment_id) DO NOTHING",
        payment["id"],
        payment["merchant_id"],
        payment["customer_email"],
        payment["amount"],
        payment["currency"],
        payment["provider_payment_id"],
        payment["paid_at"],
        payment["product_id"],
        payment["product_name"],
        payment["product_kind"],
    )
    return bool(status == "INSERT 0 1")


async def get_payment(conn: asyncpg.Connection, merchant_id: str, payment_id: str, *, lock: bool = False) -> Row | None:
    """The merchant's payment, or None (another merchant's payment does not exist for this one)."""
    sql = "SELECT * FROM payments WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, payment_id, merchant_id)
    return dict(row) if row else None


async def amount_held_by_refunds(conn: asyncpg.Connection, payment_id: str) -> int:
    held: int = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE payment_id = $1 AND status = ANY($2::text[])",
        payment_id,
        [s.value for s in HOLDING_STATUSES],
    )
    return held


async def add_to_refunded_amount(conn: asyncpg.Connection, payment_id: str, amount: int) -> None:
    await conn.execute("UPDATE payments SET refunded_amount = refunded_amount + $2 WHERE id = $1", payment_id, amount)


async def insert_refund(conn: asyncpg.Connection, refund: Row) -> None:
    await conn.execute(
        "INSERT INTO refunds (id, merchant_id, payment_id, amount, currency, reason, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        refund["id"],
        refund["merchant_id"],
        refund["payment_id"],
        refund["amount"],
        refund["currency"],
        refund["reason"],
        refund["status"],
    )


async def get_refund(
    conn: asyncpg.Connection, refund_id: str, *, merchant_id: str | None = None, lock: bool = False
) -> Row | None:
    """A refund by id; with ``merchant_id``, only if it is that merchant's."""
    sql = "SELECT * FROM refunds WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2)"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), refund_id, merchant_id)
    return dict(row) if row else None


async def update_refund_status(
    conn: asyncpg.Connection, refund_id: str, status: RefundStatus, *, failure_reason: str | None = None
) -> None:
    await conn.execute(
        "UPDATE refunds SET status = $2, failure_reason = coalesce($3, failure_reason), updated_at = now()"
        " WHERE id = $1",
        refund_id,
        status.value,
        failure_reason,
    )


async def add_timeline_entry(
    conn: asyncpg.Connection, refund_id: str, status: RefundStatus, actor: str, note: str | None = None
) -> None:
    await conn.execute(
        "INSERT INTO refund_timeline (refund_id, status, actor, note) VALUES ($1, $2, $3, $4)",
        refund_id,
        status.value,
        actor,
        note,
    )


async def refund_timeline(conn: asyncpg.Connection, refund_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT status, actor, note, at FROM refund_timeline WHERE refund_id = $1 ORDER BY id", refund_id
    )
    return [dict(r) for r in rows]


async def refunds_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[Row]:
    rows = await conn.fetch("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, id", payment_id)
    return [dict(r) for r in rows]
