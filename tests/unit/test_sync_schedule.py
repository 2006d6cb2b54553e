"""When the sync job scans a payment again: a quarter of its age later, within bounds, and never past its window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from refundflow_processor.sync_schedule import next_scan_at

KNOWN = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW, MINUTE = timedelta(days=365), timedelta(minutes=1)


def after(age: timedelta) -> timedelta | None:
    """How long after a scan at ``age`` the next one comes."""
    scanned = KNOWN + age
    due = next_scan_at(KNOWN, scanned, window=WINDOW, shortest_gap=MINUTE)
    return None if due is None else due - scanned


def test_a_recent_payment_is_scanned_again_soon_an_older_one_later() -> None:
    assert after(timedelta(0)) == MINUTE
    assert after(timedelta(hours=1)) == timedelta(minutes=15)
    assert after(timedelta(days=1)) == timedelta(hours=6)
    assert after(timedelta(days=28)) == timedelta(days=7)
    assert after(timedelta(days=200)) == timedelta(days=7)


def test_the_last_scan_is_when_the_window_closes_and_none_after() -> None:
    assert after(WINDOW - timedelta(days=2)) == timedelta(days=2)
    assert after(WINDOW) is None
    assert after(WINDOW + timedelta(days=30)) is None
