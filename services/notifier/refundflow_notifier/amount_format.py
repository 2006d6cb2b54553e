"""Amounts as customers read them: the currency's decimals, grouped thousands, its symbol where well known."""

from __future__ import annotations

from refundflow_shared.money import minor_unit_exponent

# Only symbols that are unambiguous to a reader; other currencies show their ISO code (``KWD 1.250``).
_SYMBOLS = {"EUR": "€", "GBP": "£", "JPY": "¥", "USD": "$", "INR": "₹", "KRW": "₩"}


def format_amount(amount: int, currency: str) -> str:
    """``(123456, "EUR") -> "€1,234.56"``, ``(1500, "JPY") -> "¥1,500"``, ``(1250, "KWD") -> "KWD 1.250"``."""
    exponent = minor_unit_exponent(currency)
    whole, fraction = divmod(amount, 10**exponent)
    number = f"{whole:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{currency} {number}"
