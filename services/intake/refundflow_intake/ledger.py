"""The merchant's balance, an append-only ledger in intake: payments credit it, succeeded refunds debit it.

Intake owns it because intake already holds both sides, each in the transaction that learns of it: the payment
(registered here, or consumed from ``payment.succeeded``) and the refund outcome (consumed from
``refund.succeeded``). A unique (kind, source) pair makes each entry happen once, whatever is redelivered.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def credit_payment(conn: asyncpg.Connection, payment: dict[str, Any]) -> None:
    await _add(conn, payment["merchant_id"], payment["currency"], payment["amount"], "payment", payment["id"])


async def debit_refund(conn: asyncpg.Connection, refund: dict[str, Any]) -> None:
    await _add(conn, refund["merchant_id"], refund["currency"], -refund["amount"], "refund", refund["id"])


async def debit_external_refund(conn: asyncpg.Connection, refund: dict[str, Any]) -> None:
    await _add(
        conn,
        refund["merchant_id"],
        refund["currency"],
        -refund["amount"],
        "external_refund",
        refund["provider_refund_id"],
    )


async def _add(conn: asyncpg.Connection, merchant_id: str, currency: str, amount: int, kind: str, source: str) -> None:
    await conn.execute(
        "INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (kind, source_id) DO NOTHING",
        merchant_id,
        currency,
        amount,
        kind,
        source,
    )


async def balance(conn: asyncpg.Connection, merchant_id: str) -> list[dict[str, Any]]:
    """Per currency: what was paid, what was refunded, and what is left."""
    rows = await conn.fetch(
        "SELECT currency,"
        " coalesce(sum(amount) FILTER (WHERE kind = 'payment'), 0)::bigint AS paid,"
        " coalesce(-sum(amount) FILTER (WHERE kind IN ('refund', 'external_refund')), 0)::bigint AS refunded,"
        " sum(amount)::bigint AS available"
        " FROM balance_entries WHERE merchant_id = $1 GROUP BY currency ORDER BY currency",
        merchant_id,
    )
    return [dict(r) for r in rows]
