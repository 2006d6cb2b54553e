"""Amounts as a merchant reads and types them: the currency's own decimals. No I/O here.

Amounts are shown with ``refundflow_shared.money.format_amount``, as everywhere; parsing turns what a person typed
("49.99", "49,99", "1500") into minor units exactly, with no float on the way.
"""

from __future__ import annotations

import re

from refundflow_intake.domain import InvalidAmount
from refundflow_shared.money import CURRENCY_SYMBOLS, minor_unit_exponent


def major_units(amount: int, currency: str) -> str:
    """The amount as typed in a form: ``(4999, "EUR") -> "49.99"``."""
    exponent = minor_unit_exponent(currency)
    whole, fraction = divmod(amount, 10**exponent)
    return f"{whole}" + (f".{fraction:0{exponent}d}" if exponent else "")


# A number as typed: one decimal separator at most, or thousands grouped by commas (then a decimal point) or by
# points (then a decimal comma), as "1,234.56" and "1.234,56"; spaces were taken out before.
_PLAIN = re.compile(r"(\d+)(?:([.,])(\d+))?")
_GROUPED_BY_COMMAS = re.compile(r"([1-9]\d{0,2}(?:,\d{3})+)(?:\.(\d+))?")
_GROUPED_BY_POINTS = re.compile(r"([1-9]\d{0,2}(?:\.\d{3})+)(?:,(\d+))?")
_MAX_WHOLE_DIGITS = 13  # past any amount taken (MAX_MINOR_UNITS), and no huge number is built from a page's text


def parse_amount(typed: str, currency: str) -> int:
    """What a person typed, in minor units: "49.99" EUR -> 4999, "1500" JPY -> 1500, "$1,234.56" USD -> 123456
    (grouped thousands and the currency's symbol or code, as amounts are shown, are read too). More decimals than
    the currency has is refused, never rounded."""
    exponent = minor_unit_exponent(currency)
    number = _without_currency(re.sub(r"[\s\u00a0\u202f]", "", typed or ""), currency)
    whole, fraction = _whole_and_fraction(number, exponent, typed, currency)
    if len(whole) > _MAX_WHOLE_DIGITS:
        raise InvalidAmount(f"'{typed[:30]}' is not an amount: type it like {_example(exponent)}")
    if len(fraction) > exponent:
        raise InvalidAmount(f"{currency} has {exponent} decimals: '{typed[:30]}' has more")
    minor: int = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    return minor


def _without_currency(number: str, currency: str) -> str:
    """The number without the currency's own symbol or code in front, as amounts are shown (``€49.99``, ``KWD
    1.250``); another currency's stays, and the number is refused."""
    for prefix in (CURRENCY_SYMBOLS.get(currency), currency):
        if prefix and number.upper().startswith(prefix):
            return number[len(prefix) :]
    return number


def _whole_and_fraction(number: str, exponent: int, typed: str, currency: str) -> tuple[str, str]:
    if plain := _PLAIN.fullmatch(number):
        whole, separator, fraction = plain.group(1), plain.group(2), plain.group(3) or ""
        # "1,500": fifteen hundred, or one and a half with a decimal comma. Where the currency has fewer than three
        # decimals only the first is an amount (and in one with none, "1.500" too); otherwise both are.
        if len(fraction) == 3 and len(whole) <= 3 and not whole.startswith("0"):
            if (separator == "," and exponent < 3) or exponent == 0:
                return whole + fraction, ""
            if separator == ",":
                raise InvalidAmount(
                    f"'{typed[:30]}' could group thousands: type {whole}{fraction} or {whole}.{fraction}"
                )
        return whole, fraction
    for grouped, separator in ((_GROUPED_BY_COMMAS, ","), (_GROUPED_BY_POINTS, ".")):
        if match := grouped.fullmatch(number):
            return match.group(1).replace(separator, ""), match.group(2) or ""
    raise InvalidAmount(f"'{typed[:30]}' is not an amount: type it like {_example(exponent)}")


def _example(exponent: int) -> str:
    """An amount as the currency takes it: 49 yen, 49.99 euros, 49.999 dinars."""
    return "49" + (f".{'9' * exponent}" if exponent else "")
