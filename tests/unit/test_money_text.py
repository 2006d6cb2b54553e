"""Amounts as a merchant or a customer types them into a page, read into minor units exactly."""

from __future__ import annotations

import pytest

from refundflow_intake.dashboard.money_text import parse_amount
from refundflow_intake.domain import InvalidAmount
from refundflow_shared.money import format_amount


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("49.99", "EUR", 4999),
        ("49,99", "EUR", 4999),  # a decimal comma
        ("49.9", "EUR", 4990),
        ("1500", "JPY", 1500),
        ("1.5", "KWD", 1500),
        ("1.500", "KWD", 1500),
        ("1,5", "KWD", 1500),
        (" 12 000 ", "EUR", 1_200_000),
    ],
)
def test_what_is_typed_is_read_exactly_in_minor_units(typed: str, currency: str, minor: int) -> None:
    assert parse_amount(typed, currency) == minor


@pytest.mark.parametrize(("typed", "currency"), [("49.999", "EUR"), ("1.5", "JPY"), ("-5", "EUR"), ("", "EUR")])
def test_more_decimals_than_the_currency_has_or_no_number_is_refused(typed: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(typed, currency)


@pytest.mark.parametrize("currency", ["KWD", "EUR", "JPY"])
def test_a_comma_before_three_digits_is_refused_as_it_may_group_thousands(currency: str) -> None:
    """'1,500' is fifteen hundred to one reader and one and a half to another: in a three-decimal currency it
    would be read as 1.500, a thousandth of what an English reader meant."""
    with pytest.raises(InvalidAmount, match="1500"):
        parse_amount("1,500", currency)


@pytest.mark.parametrize(("minor", "currency"), [(123456, "EUR"), (1500, "JPY"), (1_500_000, "KWD"), (5, "BHD")])
def test_a_formatted_amount_without_its_grouping_reads_back_as_the_same_amount(minor: int, currency: str) -> None:
    shown = format_amount(minor, currency).lstrip("€¥").removeprefix(f"{currency} ").replace(",", "")
    assert parse_amount(shown, currency) == minor
