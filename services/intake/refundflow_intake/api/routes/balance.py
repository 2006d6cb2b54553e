from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from refundflow_intake import ledger, listing_queries, repository
from refundflow_intake.api.dependencies import CurrentCaller, Db
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import Currency, Timestamp
from refundflow_intake.api.routes.payments import Limit, StartingAfter
from refundflow_intake.api.schemas import Balance, BalanceDisputes, BalanceEntry, BalanceEntryList, BalanceLine
from refundflow_intake.domain import InvalidCursor, InvalidPeriod
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(prefix="/v1/balance", tags=["balance"], route_class=RetriedRoute)


@router.get("", responses=documented())
async def get_balance(caller: CurrentCaller, db: Db) -> Balance:
    """Per currency: payments received, refunds that reached customers, refunds held while the provider
    answers (approved, or pending outside Refundflow), and what is available; beside it, what disputed payments
    amount to. The balance does not account for disputes or chargebacks: available still counts a disputed
    payment's money, which the provider may already have taken back."""
    async with db.snapshot() as conn:
        lines = await ledger.balance(conn, caller.merchant_id)
        disputes = await repository.disputed_per_currency(conn, caller.merchant_id)
    return Balance(data=[BalanceLine(**line) for line in lines], disputes=[BalanceDisputes(**row) for row in disputes])


@router.get("/entries", responses=documented(InvalidCursor, InvalidPeriod))
async def list_balance_entries(
    caller: CurrentCaller,
    db: Db,
    currency: Currency | None = None,
    start: Annotated[Timestamp | None, Query(alias="from", description="booked at or after")] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="booked before; after from")] = None,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> BalanceEntryList:
    """Every movement of your balance, newest first, for reconciliation: each payment received, each refund's hold
    and its release, each refund that reached the customer or was reversed, yours and those made at the provider,
    signed as it moves ``available``, with the payment and refund it is for and when it was booked. The entries of
    a currency sum to its balance's ``available``; those of a day (``from``, ``to``) to what that day moved."""
    if start is not None and end is not None and start >= end:
        raise InvalidPeriod("from must be before to")
    async with db.snapshot() as conn:
        rows, has_more = await listing_queries.list_balance_entries(
            conn,
            caller.merchant_id,
            limit=limit,
            starting_after=starting_after,
            currency=currency,
            start=start,
            end=end,
        )
    return BalanceEntryList(data=[BalanceEntry(**r) for r in rows], has_more=has_more)
