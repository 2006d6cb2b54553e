"""The merchant's lists, newest first, with cursor pagination (``limit``, ``starting_after``, ``has_more``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from refundflow_intake.domain import HOLDING_STATUSES, InvalidCursor
from refundflow_intake.repository import disputed_sql

Row = dict[str, Any]

_PAYMENT_STATUS_SQL = {
    "paid": "p.refunded_amount = 0",
    "partially_refunded": "p.refunded_amount > 0 AND p.refunded_amount < p.amount",
    "refunded": "p.refunded_amount >= p.amount",
}
_OPEN_REQUEST_SQL = "EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id AND r.status = 'pending')"


@dataclass
class _Query:
    """A WHERE clause built from filters, with numbered parameters."""

    args: list[Any] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


async def _page(
    conn: asyncpg.Connection,
    select: str,
    alias: str,
    table: str,
    query: _Query,
    limit: int,
    after: str | None,
    after_key: str | int | None = None,
) -> tuple[list[Row], bool]:
    """A page of ``select`` newest first, after the row whose id is ``after`` (as shown; ``after_key`` as stored,
    when the table keeps it otherwise)."""
    if after is not None:
        cursor = await conn.fetchrow(
            f"SELECT created_at, id FROM {table} WHERE id = $1 AND merchant_id = $2",
            after if after_key is None else after_key,
            query.args[0],
        )
        if cursor is None:
            raise InvalidCursor(f"starting_after {after!r} is not one of your {table.replace('_', ' ')}")
        c_at, c_id = query.param(cursor["created_at"]), query.param(cursor["id"])
        query.conditions.append(f"({alias}.created_at, {alias}.id) < ({c_at}, {c_id})")
    sql = (
        f"{select} WHERE {' AND '.join(query.conditions)}"
        f" ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT {query.param(limit + 1)}"
    )
    rows = [dict(r) for r in await conn.fetch(sql, *query.args)]
    return rows[:limit], len(rows) > limit


async def list_payments(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None = None,
    has_open_refund_request: bool | None = None,
) -> tuple[list[Row], bool]:
    query = _Query()
    query.conditions.append(f"p.merchant_id = {query.param(merchant_id)}")
    if status is not None:
        query.conditions.append(_PAYMENT_STATUS_SQL[status])
    if has_open_refund_request is not None:
        query.conditions.append(_OPEN_REQUEST_SQL if has_open_refund_request else f"NOT {_OPEN_REQUEST_SQL}")
    holding = query.param([s.value for s in HOLDING_STATUSES])
    select = (
        f"SELECT p.*, held_by_refunds(p.id, {holding}::text[]) AS held_by_refunds,"
        f" {disputed_sql('p')}"
        " AS disputed FROM payments p"
    )
    return await _page(conn, select, "p", "payments", query, limit, starting_after)


async def list_refunds(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None,
    status: str | None = None,
    payment_id: str | None = None,
) -> tuple[list[Row], bool]:
    query = _Query()
    query.conditions.append(f"r.merchant_id = {query.param(merchant_id)}")
    if status is not None:
        query.conditions.append(f"r.status = {query.param(status)}")
    if payment_id is not None:
        query.conditions.append(f"r.payment_id = {query.param(payment_id)}")
    return await _page(conn, "SELECT r.* FROM refunds r", "r", "refunds", query, limit, starting_after)


# A ledger entry's id as shown: its row's number, named so it reads as no payment's or refund's id.
ENTRY_ID_PREFIX = "ble_"
# Our payment and refund behind each entry: a payment's entry is its own; ours name our refund, external ones the
# provider's refund, whose payment external_refunds keeps.
_ENTRY_SELECT = (
    f"SELECT '{ENTRY_ID_PREFIX}' || e.id AS id, e.kind, e.amount, e.currency, e.created_at,"
    " CASE WHEN e.kind = 'payment' THEN e.source_id WHEN e.kind LIKE 'external%' THEN"
    " (SELECT x.payment_id FROM external_refunds x WHERE x.provider_refund_id = e.source_id)"
    " ELSE (SELECT r.payment_id FROM refunds r WHERE r.id = e.source_id) END AS payment_id,"
    " CASE WHEN e.kind LIKE 'refund%' THEN e.source_id END AS refund_id,"
    " CASE WHEN e.kind LIKE 'external%' THEN e.source_id WHEN e.kind IN ('refund', 'refund_reversal') THEN"
    " (SELECT r.provider_refund_id FROM refunds r WHERE r.id = e.source_id) END AS provider_refund_id"
    " FROM balance_entries e"
)


async def list_balance_entries(
    conn: asyncpg.Connection,
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None,
    currency: str | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[list[Row], bool]:
    """The merchant's ledger entries booked in [start, end), newest first, read along
    ``balance_entries_by_merchant_time``."""
    after_key = None
    if starting_after is not None:
        number = starting_after.removeprefix(ENTRY_ID_PREFIX)
        if number == starting_after or not number.isascii() or not number.isdigit() or len(number) > 18:
            raise InvalidCursor(f"starting_after {starting_after!r} is not one of your balance entries")
        after_key = int(number)
    query = _Query()
    query.conditions.append(f"e.merchant_id = {query.param(merchant_id)}")
    if currency is not None:
        query.conditions.append(f"e.currency = {query.param(currency)}")
    if start is not None:
        query.conditions.append(f"e.created_at >= {query.param(start)}")
    if end is not None:
        query.conditions.append(f"e.created_at < {query.param(end)}")
    return await _page(conn, _ENTRY_SELECT, "e", "balance_entries", query, limit, starting_after, after_key)
