from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from refundflow_intake.domain import InvalidProration
from refundflow_intake.proration import period_days, prorate


def test_one_week_of_downtime_in_a_28_day_month_is_a_quarter() -> None:
    assert prorate(4_000, 7, 28) == 1_000


@pytest.mark.parametrize(
    ("currency", "amount", "days", "of_days", "expected"),
    [
        # JPY, no decimals: 1000 yen × 7/30 = 233.33… → 233 yen; 999 × 1/2 = 499.5 → 500 (half up).
        ("JPY", 1_000, 7, 30, 233),
        ("JPY", 999, 1, 2, 500),
        # EUR, 2 decimals: 9.99 € × 7/30 = 2.331 € → 2.33 €; 0.05 € × 1/2 = 0.025 € → 0.03 €.
        ("EUR", 999, 7, 30, 233),
        ("EUR", 5, 1, 2, 3),
        # KWD, 3 decimals: 10.000 KWD × 1/3 = 3.3333 → 3.333; 12.345 KWD × 2/3 = 8.230 KWD.
        ("KWD", 10_000, 1, 3, 3_333),
        ("KWD", 12_345, 2, 3, 8_230),
    ],
)
def test_the_share_rounds_half_up_to_a_whole_minor_unit(
    currency: str, amount: int, days: int, of_days: int, expected: int
) -> None:
    assert prorate(amount, days, of_days) == expected


def test_the_whole_period_is_the_whole_amount_and_never_more() -> None:
    assert prorate(12_345, 31, 31) == 12_345
    with pytest.raises(InvalidProration):
        prorate(12_345, 32, 31)
    with pytest.raises(InvalidProration):
        prorate(12_345, 0, 31)


@pytest.mark.parametrize(("amount", "days", "of_days"), [(1, 1, 3), (49, 1, 100)])
def test_a_share_that_rounds_to_nothing_is_refused(amount: int, days: int, of_days: int) -> None:
    with pytest.raises(InvalidProration, match="less than one minor unit"):
        prorate(amount, days, of_days)
    assert prorate(amount + 1, days, of_days) == 1  # half a minor unit rounds up


@pytest.mark.parametrize(
    ("amount", "days", "of_days", "step", "expected"),
    [
        # KWD at Stripe, whole tens of fils: 12.350 KWD × 7/28 = 3.0875 → 3.090 (half a step up); 1/3 of 10.000 → 3.330.
        (12_350, 7, 28, 10, 3_090),
        (10_000, 1, 3, 10, 3_330),
        # MGA, whole ariary at Stripe (100 of our minor units): 101.00 × 7/28 = 25.25 → 25.00.
        (10_100, 7, 28, 100, 2_500),
    ],
)
def test_the_share_rounds_half_up_to_a_whole_step_the_provider_takes(
    amount: int, days: int, of_days: int, step: int, expected: int
) -> None:
    assert prorate(amount, days, of_days, step=step) == expected


def test_a_share_under_half_a_step_is_refused() -> None:
    with pytest.raises(InvalidProration, match="less than"):
        prorate(10_000, 1, 3_000, step=10)  # 3.3 fils: under half of the ten Stripe takes
    assert prorate(10_000, 1, 2_000, step=10) == 10  # 5 fils, half a step: up


def test_a_period_counts_started_days() -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    assert period_days(start, datetime(2026, 3, 1, tzinfo=UTC)) == 28
    assert period_days(start, datetime(2026, 3, 1, 2, tzinfo=UTC)) == 29


def test_a_period_across_a_dst_change_counts_its_calendar_days() -> None:
    cest, cet = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    # October in Berlin is 31 days and one hour long (the clocks go back): the hour is no started day.
    assert period_days(datetime(2026, 10, 1, tzinfo=cest), datetime(2026, 11, 1, tzinfo=cet)) == 31
    assert period_days(datetime(2026, 3, 1, tzinfo=cet), datetime(2026, 4, 1, tzinfo=cest)) == 31  # an hour short
    assert period_days(datetime(2026, 10, 1, tzinfo=cest), datetime(2026, 11, 1, 1, tzinfo=cet)) == 32


def test_a_period_read_back_in_utc_across_a_dst_change_still_counts_its_calendar_days() -> None:
    """PostgreSQL gives timestamps back in UTC, offsets gone: the hour a DST change adds or takes is still no day."""
    cest, cet = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    october = datetime(2026, 10, 1, tzinfo=cest).astimezone(UTC), datetime(2026, 11, 1, tzinfo=cet).astimezone(UTC)
    march = datetime(2026, 3, 1, tzinfo=cet).astimezone(UTC), datetime(2026, 4, 1, tzinfo=cest).astimezone(UTC)
    assert (period_days(*october), period_days(*march)) == (31, 31)
