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


async def merchant_exists(conn: asyncpg.Connection, merchant_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1)", merchant_id))


async def insert_api_key(
    conn: asyncpg.Connection, key_id: str, merchant_id: str, api_key: str, name: str | None = None
) -> Row:
    row = await conn.fetchrow(
        "INSERT INTO api_keys (id, merchant_id, key_hash, name) VALUES ($1, $2, $3, $4)"
        " RETURNING id, name, created_at, revoked_at",
        key_id,
        merchant_id,
        hash_api_key(api_key),
        name,
    )
    return dict(row)


async def list_api_keys(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT id, name, created_at, revoked_at FROM api_keys WHERE merchant_id = $1 ORDER BY created_at, id",
        merchant_id,
    )
    return [dict(r) for r in rows]


async def revoke_api_key(conn: asyncpg.Connection, merchant_id: str, key_id: str) -> Row | None:
    """Revoke the merchant's key (a no-op when already revoked); None when it has no such key."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND merchant_id = $2"
        " RETURNING id, name, created_at, revoked_at",
        key_id,
        merchant_id,
    )
    return dict(row) if row else None


async def api_key_owner(conn: asyncpg.Connection, api_key: str) -> tuple[str, str] | None:
    """(merchant id, key id) of a live key, or None."""
    row = await conn.fetchrow(
        "SELECT merchant_id, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_api_key(api_key)
    )
    return (row["merchant_id"], row["id"]) if row else None


_PAYMENT_COLUMNS = (
    "id",
    "merchant_id",
    "customer_email",
    "amount",
    "currency",
    "provider_payment_id",
    "paid_at",
    "product_id",
    "product_name",
    "product_kind",
    "customer_name",
    "product_category",
    "subscription_id",
    "subscription_period_start",
    "subscription_period_end",
)


async def insert_payment(conn: asyncpg.Connection, payment: Row) -> bool:
    """False when the payment id, or this merchant's provider payment, is already registered."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(_PAYMENT_COLUMNS) + 1))
    status = await conn.execute(
        f"INSERT INTO payments ({', '.join(_PAYMENT_COLUMNS)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
        *(payment.get(column) for column in _PAYMENT_COLUMNS),
    )
    return bool(status == "INSERT 0 1")


async def get_payment(conn: asyncpg.Connection, merchant_id: str, payment_id: str, *, lock: bool = False) -> Row | None:
    """The merchant's payment, or None (another merchant's payment does not exist for this one)."""
    sql = "SELECT * FROM payments WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, payment_id, merchant_id)
    return dict(row) if row else None


async def amount_held_by_refunds(conn: asyncpg.Connection, payment_id: str) -> int:
    held: int = await conn.fetchval(
        "SELECT held_by_refunds($1, $2::text[])",
        payment_id,
        [s.value for s in HOLDING_STATUSES],
    )
    return held


async def insert_external_refund(conn: asyncpg.Connection, refund: Row) -> bool:
    """False when this provider refund was already recorded (a redelivery or a second detection)."""
    status = await conn.execute(
        "INSERT INTO external_refunds (provider_refund_id, payment_id, merchant_id, amount, currency, status)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        refund["provider_refund_id"],
        refund["payment_id"],
        refund["merchant_id"],
        refund["amount"],
        refund["currency"],
        refund["status"],
    )
    return bool(status == "INSERT 0 1")


async def add_to_refunded_amount(conn: asyncpg.Connection, payment_id: str, amount: int) -> None:
    await conn.execute("UPDATE payments SET refunded_amount = refunded_amount + $2 WHERE id = $1", payment_id, amount)


async def record_dispute(conn: asyncpg.Connection, dispute: Row) -> None:
    await conn.execute(
        "INSERT INTO payment_disputes (payment_id, merchant_id, dispute_id, reason) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (payment_id) DO NOTHING",
        dispute["payment_id"],
        dispute["merchant_id"],
        dispute["dispute_id"],
        dispute["reason"],
    )


async def is_disputed(conn: asyncpg.Connection, payment_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM payment_disputes WHERE payment_id = $1)", payment_id))


async def has_open_customer_request(conn: asyncpg.Connection, payment_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM refunds WHERE payment_id = $1 AND status = 'pending' AND channel <> 'api')",
            payment_id,
        )
    )


_REFUND_COLUMNS = (
    "id",
    "merchant_id",
    "payment_id",
    "amount",
    "currency",
    "reason",
    "status",
    "reason_details",
    "channel",
    "flags",
    "requested_amount",
)


async def insert_refund(conn: asyncpg.Connection, refund: Row) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(_REFUND_COLUMNS) + 1))
    await conn.execute(
        f"INSERT INTO refunds ({', '.join(_REFUND_COLUMNS)}) VALUES ({placeholders})",
        *(refund.get(column) for column in _REFUND_COLUMNS),
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


async def record_decision(conn: asyncpg.Connection, refund_id: str, decision: Row) -> None:
    """The merchant's decision: status, the amount approved, what happens to the subscription, the note."""
    await conn.execute(
        "UPDATE refunds SET status = $2, amount = $3, subscription_action = $4, extend_days = $5,"
        " decision_note = $6, decided_at = now(), updated_at = now() WHERE id = $1",
        refund_id,
        decision["status"],
        decision["amount"],
        decision.get("subscription_action"),
        decision.get("extend_days"),
        decision.get("note"),
    )


async def add_timeline_entry(
    conn: asyncpg.Connection,
    refund_id: str,
    status: RefundStatus,
    actor: str,
    note: str | None = None,
    *,
    action: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO refund_timeline (refund_id, status, actor, note, action) VALUES ($1, $2, $3, $4, $5)",
        refund_id,
        status.value,
        actor,
        note,
        action or status.value,
    )


async def refund_timeline(conn: asyncpg.Connection, refund_id: str) -> list[Row]:
    rows = await conn.fetch(
        "SELECT status, coalesce(action, status) AS action, actor, note, at FROM refund_timeline"
        " WHERE refund_id = $1 ORDER BY id",
        refund_id,
    )
    return [dict(r) for r in rows]


async def refunds_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[Row]:
    rows = await conn.fetch("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, id", payment_id)
    return [dict(r) for r in rows]


async def add_approval(conn: asyncpg.Connection, refund_id: str, actor: str) -> None:
    await conn.execute(
        "INSERT INTO refund_approvals (refund_id, actor) VALUES ($1, $2) ON CONFLICT DO NOTHING", refund_id, actor
    )


async def approvers_of(conn: asyncpg.Connection, refund_id: str) -> list[str]:
    rows = await conn.fetch("SELECT actor FROM refund_approvals WHERE refund_id = $1 ORDER BY approved_at", refund_id)
    return [r["actor"] for r in rows]
