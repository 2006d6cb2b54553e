"""Stripe's wire shapes for the objects the sandbox returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refundflow_sandbox.refunds import Refund


def refund_object(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "balance_transaction": None,
        "charge": refund.charge,
        "created": refund.created,
        "currency": refund.currency,
        "failure_reason": refund.failure_reason,
        "metadata": dict(refund.metadata),
        "payment_intent": refund.payment_intent,
        "reason": refund.reason,
        "status": refund.status.value,
    }


def list_object(data: Sequence[dict[str, Any]], *, has_more: bool, url: str) -> dict[str, Any]:
    return {"object": "list", "data": list(data), "has_more": has_more, "url": url}


def paginate(
    refunds: Sequence[Refund], *, limit: int, starting_after: str | None, ending_before: str | None
) -> tuple[list[Refund], bool]:
    """Stripe's cursor pagination over a newest-first list; returns the page and ``has_more``.

    Raises KeyError with the cursor when it names no refund in the list.
    """
    ids = [r.id for r in refunds]
    if starting_after is not None:
        rest = list(refunds[_index(ids, starting_after) + 1 :])
        return rest[:limit], len(rest) > limit
    if ending_before is not None:
        before = list(refunds[: _index(ids, ending_before)])
        return before[-limit:], len(before) > limit
    return list(refunds[:limit]), len(refunds) > limit


def _index(ids: list[str], cursor: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise KeyError(cursor) from None
