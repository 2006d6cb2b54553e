"""Amounts as a merchant reads and types them: the currency's own decimals. No I/O here.

Amounts are shown with ``refundflow_shared.money.format_amount``, as everywhere; parsing turns what a person typed
("49.99", "49,99", "1500") into minor units exactly, with no float on the way.
"""

from __future__ import annotations

import re

from refundflow_intake.domain import InvalidAmount
from refundflow_shared.money import minor_unit_exponent

_TYPED = re.compile(r"^\s*(\d{1,13})(?:([.,])(\d+))?\s*$")


def major_units(amount: int, currency: str) -> str:
    """The amount as typed in a form: ``(4999, "EUR") -> "49.99"``."""
    exponent = minor_unit_exponent(currency)
    whole, fraction = divmod(amount, 10**exponent)
    return f"{whole}" + (f".{fraction:0{exponent}d}" if exponent else "")


def parse_amount(typed: str, currency: str) -> int:
    """What a person typed, in minor units: "49.99" EUR -> 4999, "1500" JPY -> 1500. More decimals than the
    currency has is refused, never rounded."""
    exponent = minor_unit_exponent(currency)
    match = _TYPED.match(typed.replace("\u00a0", "").replace(" ", "") if typed else "")
    if match is None:
        raise InvalidAmount(f"'{typed[:30]}' is not an amount: type it like 49.99")
    whole, separator, fraction = match.group(1), match.group(2), match.group(3) or ""
    if separator == "," and len(fraction) == 3:  # "1,500": fifteen hundred, or 1.500 in a three-decimal currency
        raise InvalidAmount(f"'{typed[:30]}' could group thousands: type {whole}{fraction} or {whole}.{fraction}")
    if len(fraction) > exponent:
        raise InvalidAmount(f"{currency} has {exponent} decimals: '{typed[:30]}' has more")
    minor: int = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    return minor
