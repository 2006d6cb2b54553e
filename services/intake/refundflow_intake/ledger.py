"""The merchant's balance, an append-only ledger in intake.

Intake owns it because intake already holds both sides, each in the transaction that learns of it: the payment
(registered here, or consumed from ``payment.succeeded``) and every refund's fate (approved here; succeeded,
failed, reversed or found outside Refundflow, consumed from the processor). Payments credit it; an approved
refund holds its amount until the provider answers, then the hold is released and, on success, the refund is
debited for good; a reversal credits it back. A unique (kind, source) pair makes each entry happen once,
whatever is redelivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

Row = dict[str, Any]

# kind -> sign of the entry. Sources: a payment id, our refund id, or the provider's refund id (external_*).
_SIGN = {
    "payment": 1,
    "refund_hold": -1,
    "refund_release": 1,
    "refund": -1,
    "refund_reversal": 1,
    "external_refund_hold": -1,
    "external_refund_release": 1,
    "external_refund": -1,
    "external_refund_reversal": 1,
}
_REFUNDED = ("refund", "refund_reversal", "external_refund", "external_refund_reversal")
_HELD = ("refund_hold", "refund_release", "external_refund_hold", "external_refund_release")


Entry = tuple[str, str, Row]  # kind, source id, and the row whose merchant, amount and currency it moves


def payment_credit(payment: Row) -> Entry:
    return ("payment", payment["id"], payment)


async def record(conn: asyncpg.Connection, kind: str, source_id: str, money: Row) -> None:
    """One entry of ``kind`` for ``source_id``, of ``money``'s merchant, amount and currency; once only."""
    insert, args = entries_insert([(kind, source_id, money)], first=1)
    await conn.execute(insert, *args)


def entries_insert(entries: Sequence[Entry], *, first: int, only_if: str | None = None) -> tuple[str, list[Any]]:
    """The insert of several entries, each once only, and its arguments, numbered from ``$first``: to write them
    in the statement of the change that makes them (``only_if``: a condition on that statement's other parts)."""
    n, where = first, f" WHERE {only_if}" if only_if else ""
    return (
        "INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id) SELECT * FROM unnest("
        f"${n}::text[], ${n + 1}::text[], ${n + 2}::bigint[], ${n + 3}::text[], ${n + 4}::text[]){where}"
        " ON CONFLICT (kind, source_id) DO NOTHING",
        [
            [money["merchant_id"] for _, _, money in entries],
            [money["currency"] for _, _, money in entries],
            [_SIGN[kind] * money["amount"] for kind, _, money in entries],
            [kind for kind, _, _ in entries],
            [source_id for _, source_id, _ in entries],
        ],
    )


async def balance(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    """Per currency: paid, refunded for good, held by refunds awaiting the provider, and what is available."""
    rows = await conn.fetch(
        "SELECT currency,"
        " coalesce(sum(amount) FILTER (WHERE kind = 'payment'), 0)::bigint AS paid,"
        " coalesce(-sum(amount) FILTER (WHERE kind = ANY($2::text[])), 0)::bigint AS refunded,"
        " coalesce(-sum(amount) FILTER (WHERE kind = ANY($3::text[])), 0)::bigint AS held,"
        " sum(amount)::bigint AS available"
        " FROM balance_entries WHERE merchant_id = $1 GROUP BY currency ORDER BY currency",
        merchant_id,
        list(_REFUNDED),
        list(_HELD),
    )
    return [dict(r) for r in rows]
