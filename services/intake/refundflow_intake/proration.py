"""Partial refunds computed from days of a period. No I/O here.

Rounding rule: the exact share ``amount × days / period_days`` is rounded to the nearest minor unit of the
payment's currency, halves rounding up (in the customer's favour). Every amount is already in minor units
(yen, cents, fils), so the same integer arithmetic holds for 0-, 2- and 3-decimal currencies; the result is
never more than the payment, and never nothing: a share under half a minor unit is refused, not a refund of 0.
"""

from __future__ import annotations

from datetime import datetime

from refundflow_intake.domain import InvalidProration

SECONDS_PER_DAY = 86_400


def period_days(start: datetime, end: datetime) -> int:
    """Whole days in a subscription period (a partial day counts as a day)."""
    seconds = int((end - start).total_seconds())
    if seconds <= 0:
        raise InvalidProration("the subscription period ends before it starts")
    return -(-seconds // SECONDS_PER_DAY)


def prorate(amount: int, days: int, of_days: int) -> int:
    """``amount × days / of_days``, rounded half up to a whole minor unit."""
    if of_days <= 0:
        raise InvalidProration("the period must be at least one day")
    if not 0 < days <= of_days:
        raise InvalidProration(f"days must be between 1 and the period's {of_days} days, not {days}")
    share = (2 * amount * days + of_days) // (2 * of_days)
    if share == 0:
        raise InvalidProration(f"{days} of {of_days} days of {amount} minor units is less than one minor unit")
    return share
