"""Billing's own id for a provider payment registered through intake's API under ours: intake and the processor
link it to the payment (billing's disputes and commands name the payment by it) by this one rule."""

from __future__ import annotations

from typing import NamedTuple


class PaidMoney(NamedTuple):
    amount: int  # minor units
    currency: str


def alias_money_differences(registered: PaidMoney, said: PaidMoney) -> list[str]:
    """What billing says otherwise of the money than the payment registered (``amount``, ``currency``): its id is
    linked only when nothing. The two describe the customer and product each in its own words, but a refund asked
    by billing's id with no currency is sized in the registered payment's."""
    pairs = zip(PaidMoney._fields, registered, said, strict=True)
    return [field for field, first, again in pairs if first != again]
