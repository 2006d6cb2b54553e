"""SQL for refund policies: the merchant's (product_id '') and per-product overrides, as JSON documents."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from refundflow_intake.domain import TooManyProductOverrides
from refundflow_intake.merchant_accounts import lock_merchant
from refundflow_intake.refund_policy import (
    ReasonsNotAccepted,
    RefundPolicy,
    auto_approve_reasons_not_accepted,
    check_auto_approve_reasons,
)

MERCHANT_WIDE = ""


async def lock_policies(conn: asyncpg.Connection, merchant_id: str) -> None:
    """Take the merchant's lock, held to the end of the transaction: every change to its policy or overrides takes
    it before reading what it changes. (A row lock would not do: before the first save there is no row, so an
    owner's first save landed between a key's read of the defaults and its write, which undid it.)"""
    await lock_merchant(conn, merchant_id)


async def _document(conn: asyncpg.Connection, merchant_id: str, product_id: str) -> dict[str, Any] | None:
    raw = await conn.fetchval(
        "SELECT policy FROM refund_policies WHERE merchant_id = $1 AND product_id = $2", merchant_id, product_id
    )
    return dict(json.loads(raw)) if raw is not None else None


async def merchant_policy(conn: asyncpg.Connection, merchant_id: str) -> RefundPolicy:
    """The merchant's policy; the defaults until the merchant sets one."""
    return RefundPolicy.model_validate(await _document(conn, merchant_id, MERCHANT_WIDE) or {})


async def product_override(conn: asyncpg.Connection, merchant_id: str, product_id: str) -> dict[str, Any] | None:
    return await _document(conn, merchant_id, product_id) if product_id != MERCHANT_WIDE else None


async def overridden_products(conn: asyncpg.Connection, merchant_id: str) -> frozenset[str] | None:
    """The merchant's products with an override; None: no such merchant."""
    products = await conn.fetchval(
        "SELECT ARRAY(SELECT product_id FROM refund_policies WHERE merchant_id = m.id AND product_id <> $2)"
        " FROM merchants m WHERE m.id = $1",
        merchant_id,
        MERCHANT_WIDE,
    )
    return frozenset(products) if products is not None else None


def documents_column(merchant: str, product: str) -> str:
    """The documents that make a product's policy (the merchant's and the product's override) as one column of a
    query, ``policy_documents``: the hot paths read them in a round trip they make anyway. ``merchant`` and
    ``product`` are the query's parameters for them (``$3``)."""
    return (
        f"ARRAY(SELECT (product_id, policy::text) FROM refund_policies WHERE merchant_id = {merchant}"
        f" AND product_id = ANY(ARRAY['{MERCHANT_WIDE}', coalesce({product}::text, '{MERCHANT_WIDE}')]))"
        " AS policy_documents"
    )


def policy_from(documents: Iterable[Sequence[str]], product_id: str | None) -> RefundPolicy:
    """What applies to one product, from ``documents_column``: the merchant's policy, the override on top."""
    by_product = {product: dict(json.loads(document)) for product, document in documents}
    policy = RefundPolicy.model_validate(by_product.get(MERCHANT_WIDE) or {})
    override = by_product.get(product_id) if product_id and product_id != MERCHANT_WIDE else None
    return policy.with_override(override) if override else policy


async def effective_policy(conn: asyncpg.Connection, merchant_id: str, product_id: str | None) -> RefundPolicy:
    """What applies to one product: the merchant's policy with the product's override on top (one query)."""
    documents = await conn.fetchval(f"SELECT {documents_column('$1', '$2')}", merchant_id, product_id)
    return policy_from(documents, product_id)


async def check_room_for_override(
    conn: asyncpg.Connection, merchant_id: str, product_id: str, *, max_overrides: int
) -> None:
    """Before an override is saved, under ``lock_policies``: a product without one gets one only while the merchant
    has fewer than ``max_overrides`` (every read and save of the policy answers them all)."""
    room = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM refund_policies WHERE merchant_id = $1 AND product_id = $2)"
        " OR (SELECT count(*) FROM refund_policies WHERE merchant_id = $1 AND product_id <> $3) < $4",
        merchant_id,
        product_id,
        MERCHANT_WIDE,
        max_overrides,
    )
    if not room:
        raise TooManyProductOverrides(
            f"a merchant has at most {max_overrides} product overrides: remove one first, or change one it has"
        )


async def save(conn: asyncpg.Connection, merchant_id: str, product_id: str, document: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (merchant_id, product_id) DO UPDATE SET policy = excluded.policy, updated_at = now()",
        merchant_id,
        product_id,
        json.dumps(document),
    )


async def change_override(conn: asyncpg.Connection, merchant_id: str, product_id: str, fields: dict[str, Any]) -> None:
    """Set these fields of a product's override (made if it has none), keeping its others: the dashboard's form
    shows a few of them, and the rest may have been set through the API."""
    await conn.execute(
        "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (merchant_id, product_id) DO UPDATE SET policy = refund_policies.policy || excluded.policy,"
        " updated_at = now()",
        merchant_id,
        product_id,
        json.dumps(fields),
    )


async def delete_override(conn: asyncpg.Connection, merchant_id: str, product_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM refund_policies WHERE merchant_id = $1 AND product_id = $2 AND product_id <> ''",
        merchant_id,
        product_id,
    )
    return bool(status == "DELETE 1")


async def overrides(conn: asyncpg.Connection, merchant_id: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT product_id, policy FROM refund_policies WHERE merchant_id = $1 AND product_id <> ''"
        " ORDER BY product_id",
        merchant_id,
    )
    return {r["product_id"]: dict(json.loads(r["policy"])) for r in rows}


async def _overrides_judging_auto_approval(conn: asyncpg.Connection, merchant_id: str) -> dict[str, dict[str, Any]]:
    # Only an override setting one of these can refuse what the merchant's policy allows: the others are read as it.
    rows = await conn.fetch(
        "SELECT product_id, (SELECT jsonb_object_agg(key, value) FROM jsonb_each(policy)"
        "  WHERE key IN ('auto_approve', 'accepted_reasons')) AS judged"
        " FROM refund_policies WHERE merchant_id = $1 AND product_id <> $2"
        " AND policy ?| ARRAY['auto_approve', 'accepted_reasons']",
        merchant_id,
        MERCHANT_WIDE,
    )
    return {r["product_id"]: dict(json.loads(r["judged"])) for r in rows}


async def auto_approve_reasons_left_out(
    conn: asyncpg.Connection, merchant_id: str, product_id: str
) -> ReasonsNotAccepted:
    """The reasons automatic approval is for and its policy does not accept, in the policies a save of ``product_id``
    changes: the merchant's policy changes every product's (at most the capped number of overrides, each read only for
    its automatic approval and accepted reasons); an override, its product's."""
    policy = await merchant_policy(conn, merchant_id)
    if product_id == MERCHANT_WIDE:
        changed = await _overrides_judging_auto_approval(conn, merchant_id)
        judged: dict[str | None, RefundPolicy] = {None: policy}
    else:
        changed = {product_id: await product_override(conn, merchant_id, product_id) or {}}
        judged = {}
    judged |= {product: policy.with_override(override) for product, override in changed.items()}
    return {product: auto_approve_reasons_not_accepted(judged_policy) for product, judged_policy in judged.items()}


async def check_saved(
    conn: asyncpg.Connection, merchant_id: str, product_id: str, *, before: ReasonsNotAccepted
) -> None:
    """After a save, in its transaction: it added no automatic approval that cannot approve (raise and the save is
    undone). ``before``: ``auto_approve_reasons_left_out`` read under ``lock_policies`` before the save wrote."""
    check_auto_approve_reasons(before, await auto_approve_reasons_left_out(conn, merchant_id, product_id))
