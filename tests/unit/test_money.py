from __future__ import annotations

import pytest
from pydantic import ValidationError

from refundflow_shared.money import Money, UnknownCurrency, minor_unit_exponent


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("JPY", 0),
        ("KRW", 0),
        ("EUR", 2),
        ("USD", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("CLF", 4),
        ("UYU", 2),  # Uruguayan peso (UYI, its indexed unit, has none; UYW four)
        ("XCG", 2),  # Caribbean guilder, which replaced ANG in 2025
        ("VED", 2),  # Venezuela's digital bolívar, beside VES
    ],
)
def test_each_currency_knows_its_minor_unit(currency: str, exponent: int) -> None:
    assert minor_unit_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (4999, "EUR", "€49.99"),
        (5, "USD", "$0.05"),
        (1500, "JPY", "¥1,500"),
        (1250, "KWD", "KWD 1.250"),
        (0, "EUR", "€0.00"),
    ],
)
def test_amounts_render_with_the_currencys_decimals(amount: int, currency: str, shown: str) -> None:
    assert Money(amount=amount, currency=currency).format() == shown


def test_an_unknown_currency_is_refused_rather_than_guessed() -> None:
    with pytest.raises(UnknownCurrency):
        minor_unit_exponent("XYZ")
    with pytest.raises(ValidationError):
        Money(amount=100, currency="XYZ")


@pytest.mark.parametrize("amount", [10.5, "100", -1])
def test_money_is_a_non_negative_integer_of_minor_units(amount: object) -> None:
    with pytest.raises(ValidationError):
        Money(amount=amount, currency="EUR")


def test_currency_codes_are_normalised_to_upper_case() -> None:
    assert Money(amount=1, currency="eur").currency == "EUR"
