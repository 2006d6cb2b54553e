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


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("1,234.56", "USD", 123_456),  # as the portal shows it
        ("$1,234.56", "USD", 123_456),
        ("1,234", "USD", 123_400),  # a decimal comma would give 3 decimals, which USD has not
        ("1,234,567.8", "EUR", 123_456_780),
        ("€ 1,234.56", "EUR", 123_456),
        ("eur 49.99", "EUR", 4_999),
        ("1.234,56", "EUR", 123_456),  # European grouping with a decimal comma
        ("1.234.567", "EUR", 123_456_700),
        ("1,500", "JPY", 1_500),  # no decimals in yen: a comma can only group
        ("¥1,500", "JPY", 1_500),
        ("1.500", "JPY", 1_500),
        ("15,000", "KRW", 15_000),
        ("₩1,234,567", "KRW", 1_234_567),
        ("KWD 1,234.567", "KWD", 1_234_567),
        ("KWD 1.250", "KWD", 1_250),  # as shown: a three-decimal currency's point stays one
        ("1,234,567", "KWD", 1_234_567_000),
    ],
)
def test_grouped_thousands_and_the_currencys_own_symbol_are_read(typed: str, currency: str, minor: int) -> None:
    assert parse_amount(typed, currency) == minor


@pytest.mark.parametrize(("minor", "currency"), [(123_456, "USD"), (150_000, "JPY"), (1_234_567, "KWD"), (5, "EUR")])
def test_an_amount_as_shown_reads_back_as_the_same_amount(minor: int, currency: str) -> None:
    assert parse_amount(format_amount(minor, currency), currency) == minor


@pytest.mark.parametrize(("typed", "currency"), [("1,250", "KWD"), ("1,250", "CLF")])
def test_a_comma_before_three_digits_is_refused_where_it_may_also_be_a_decimal_point(typed: str, currency: str) -> None:
    """'1,250' is twelve hundred and fifty to one reader and one and a quarter to another: in a currency with
    three decimals or more both are amounts, and guessing is off by a factor of a thousand. Both forms offered are
    ones the currency takes."""
    with pytest.raises(InvalidAmount, match=r"type 1250 or 1\.250$"):
        parse_amount(typed, currency)
    for offered in ("1250", "1.250"):
        parse_amount(offered, currency)


@pytest.mark.parametrize(
    ("typed", "currency"),
    [
        ("1,23,456", "USD"),  # not groups of three
        ("1,234,56", "EUR"),
        ("1,234.5.6", "EUR"),
        ("0,500", "EUR"),  # a decimal comma, with more decimals than EUR has
        ("1.500", "EUR"),  # a decimal point, likewise: not read as fifteen hundred
        ("$12.00", "EUR"),  # another currency's symbol
        ("JPY 1500", "KRW"),
        ("12345678901234", "JPY"),
    ],
)
def test_other_forms_are_refused(typed: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(typed, currency)


@pytest.mark.parametrize(
    ("currency", "example"), [("JPY", "like 49$"), ("EUR", r"like 49\.99$"), ("KWD", r"like 49\.999$")]
)
def test_what_is_not_an_amount_is_answered_with_an_example_the_currency_takes(currency: str, example: str) -> None:
    with pytest.raises(InvalidAmount, match=example):
        parse_amount("forty", currency)


@pytest.mark.parametrize(("minor", "currency"), [(123456, "EUR"), (1500, "JPY"), (1_500_000, "KWD"), (5, "BHD")])
def test_a_formatted_amount_without_its_grouping_reads_back_as_the_same_amount(minor: int, currency: str) -> None:
    shown = format_amount(minor, currency).lstrip("€¥").removeprefix(f"{currency} ").replace(",", "")
    assert parse_amount(shown, currency) == minor
