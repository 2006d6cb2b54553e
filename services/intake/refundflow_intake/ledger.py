"""The merchant's balance, an append-only ledger in intake.

Intake owns it because intake already holds both sides, each in the transaction that learns of it: the payment
(registered here, or consumed from ``payment.succeeded``) and every refund's fate (approved here; succeeded,
failed, reversed or found outside Refundflow, consumed from the processor). Payments credit it; an approved
refund holds its amount until the provider answers, then the hold is released and, on success, the refund is
debited for good; a reversal credits it back. A unique (kind, source) pair makes each entry happen once,
whatever is redelivered. The statement that writes entries also records what it wrote per merchant and currency
(``balance_total_deltas``, one new row each, so writers never wait for each other), which a job folds into the
totals (``balance_totals``) every few seconds; the balance reads the totals and the deltas not folded yet:
summing a long history's entries took every read longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from refundflow_shared.wakeup_loop import RECOVERABLE

log = structlog.get_logger(__name__)

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
# What the balance counts as refunded, and so every figure called refunded: money that reached customers, ours
# and refunds made at the provider, less reversals, each when it settled.
REFUNDED_KINDS = ("refund", "refund_reversal", "external_refund", "external_refund_reversal")
REFUNDED_KINDS_SQL = ", ".join(f"'{kind}'" for kind in REFUNDED_KINDS)
_HELD = ("refund_hold", "refund_release", "external_refund_hold", "external_refund_release")


Entry = tuple[str, str, Row]  # kind, source id, and the row whose merchant, amount and currency it moves


def payment_credit(payment: Row) -> Entry:
    return ("payment", payment["id"], payment)


async def record(conn: asyncpg.Connection, kind: str, source_id: str, money: Row) -> None:
    """One entry of ``kind`` for ``source_id``, of ``money``'s merchant, amount and currency; once only."""
    await record_all(conn, [(kind, source_id, money)])


async def record_all(conn: asyncpg.Connection, entries: Sequence[Entry]) -> None:
    """Each of ``entries`` once only, in one statement."""
    parts, args = entries_insert(entries, first=1)
    await conn.execute(f"WITH {parts} SELECT", *args)


def _sum_of(kinds: Sequence[str]) -> str:
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    return f"coalesce(-sum(amount) FILTER (WHERE kind IN ({listed})), 0)"


def entries_insert(entries: Sequence[Entry], *, first: int, only_if: str | None = None) -> tuple[str, list[Any]]:
    """The parts of a WITH (``ledger``, ``ledger_deltas``) that write several entries, each once only, and record
    what those written add to their totals, and their arguments, numbered from ``$first``: to write them in the
    statement of the change that makes them (``only_if``: a condition on that statement's other parts)."""
    n, where = first, f" WHERE {only_if}" if only_if else ""
    return (
        "ledger AS (INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id) SELECT * FROM unnest("
        f"${n}::text[], ${n + 1}::text[], ${n + 2}::bigint[], ${n + 3}::text[], ${n + 4}::text[]){where}"
        " ON CONFLICT (kind, source_id) DO NOTHING RETURNING merchant_id, currency, amount, kind),"
        " ledger_deltas AS (INSERT INTO balance_total_deltas (merchant_id, currency, paid, refunded, held)"
        " SELECT merchant_id, currency, coalesce(sum(amount) FILTER (WHERE kind = 'payment'), 0),"
        f" {_sum_of(REFUNDED_KINDS)}, {_sum_of(_HELD)} FROM ledger GROUP BY merchant_id, currency)",
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
    # One statement, one snapshot: a fold committing meanwhile is seen whole (its deltas in the totals) or not at all.
    rows = await conn.fetch(
        "SELECT currency, sum(paid)::bigint AS paid, sum(refunded)::bigint AS refunded, sum(held)::bigint AS held,"
        " sum(paid - refunded - held)::bigint AS available FROM ("
        " SELECT currency, paid, refunded, held FROM balance_totals WHERE merchant_id = $1"
        " UNION ALL SELECT currency, paid, refunded, held FROM balance_total_deltas WHERE merchant_id = $1"
        ") AS parts GROUP BY currency ORDER BY currency",
        merchant_id,
    )
    return [dict(r) for r in rows]


async def fold_totals(conn: asyncpg.Connection, *, batch: int = 1000) -> int:
    """Move the oldest ``batch`` deltas no other fold holds into their totals, in one statement; returns how many."""
    # Totals in (merchant, currency) order: two folds adding to the same ones lock them in one order.
    moved: int = await conn.fetchval(
        "WITH moved AS (DELETE FROM balance_total_deltas WHERE id IN ("
        " SELECT id FROM balance_total_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING merchant_id, currency, paid, refunded, held),"
        " folded AS (INSERT INTO balance_totals (merchant_id, currency, paid, refunded, held)"
        " SELECT merchant_id, currency, sum(paid), sum(refunded), sum(held) FROM moved"
        " GROUP BY merchant_id, currency ORDER BY merchant_id, currency"
        " ON CONFLICT (merchant_id, currency) DO UPDATE SET paid = balance_totals.paid + excluded.paid,"
        " refunded = balance_totals.refunded + excluded.refunded, held = balance_totals.held + excluded.held)"
        " SELECT count(*) FROM moved",
        batch,
    )
    return moved


async def watch(pool: asyncpg.Pool, *, interval: float, batch: int = 1000) -> None:
    """Fold the deltas into the totals every ``interval`` seconds (at once again while full batches come back)
    until cancelled."""
    while True:
        moved = 0
        try:
            async with pool.acquire() as conn:
                moved = await fold_totals(conn, batch=batch)
        except RECOVERABLE as exc:
            log.warning("balance_totals_fold_failed", error=repr(exc))
        if moved < batch:
            await asyncio.sleep(interval)
