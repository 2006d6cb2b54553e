"""Partial refunds computed from days of a period. No I/O here.

Rounding rule: the exact share ``amount × days / period_days`` is rounded to the nearest step the provider takes
in the payment's currency (a minor unit for most; Stripe takes KWD in whole tens of fils, MGA in whole ariary),
halves rounding up (in the customer's favour). Every amount is already in minor units (yen, cents, fils), so the
same integer arithmetic holds for 0-, 2- and 3-decimal currencies; the result is never more than the payment, and
never nothing: a share under half a step is refused, not a refund of 0.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from refundflow_intake.domain import InvalidProration

_DAY = timedelta(days=1)
_DST_SHIFT = timedelta(hours=1)  # what a DST change adds to a day, or takes from it


def period_days(start: datetime, end: datetime) -> int:
    """Whole days in a subscription period; a started day counts as a day. A period within an hour of whole days
    is those days: a month across a DST change is its calendar days, not one more for its 25-hour day (or one
    less for its 23-hour one), whatever offsets its ends are given in (PostgreSQL gives them back in UTC)."""
    if end <= start:
        raise InvalidProration("the subscription period ends before it starts")
    length = end - start
    whole = round(length / _DAY)
    if whole >= 1 and abs(length - whole * _DAY) <= _DST_SHIFT:
        return whole
    return math.ceil(length / _DAY)


def prorate(amount: int, days: int, of_days: int, *, step: int = 1) -> int:
    """``amount × days / of_days``, rounded half up to a whole ``step`` of minor units."""
    if of_days <= 0:
        raise InvalidProration("the period must be at least one day")
    if not 0 < days <= of_days:
        raise InvalidProration(f"days must be between 1 and the period's {of_days} days, not {days}")
    share = (2 * amount * days + of_days * step) // (2 * of_days * step) * step
    if share == 0:
        unit = "one minor unit" if step == 1 else f"the {step} minor units the provider takes at least"
        raise InvalidProration(f"{days} of {of_days} days of {amount} minor units is less than {unit}")
    return min(share, amount)  # a payment not in whole steps: its whole period is still the whole payment
