"""When the sync job scans a payment again: recent payments often, old ones seldom, none past the refund window.

A refund made outside Refundflow (in Stripe's dashboard) is most likely on a recent payment, and cannot be made on
one past the window the provider allows refunds in; a refund of ours that fails after it succeeded does so within
days. So a payment is scanned again after a quarter of its age (counted from when the processor learned of it, at
or after its payment), at least the job's interval and at most a week apart, a last time when its window closes,
and never after that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

AGE_FRACTION = 4  # a payment a day old is scanned again after 6 hours, one 4 weeks old after a week
LONGEST_GAP = timedelta(days=7)


def next_scan_at(
    known_since: datetime, scanned_at: datetime, *, window: timedelta, shortest_gap: timedelta
) -> datetime | None:
    """When a payment known since ``known_since`` and scanned at ``scanned_at`` is due again; None: never, its
    refund ``window`` closed before this scan."""
    closes = known_since + window
    if scanned_at >= closes:
        return None
    gap = min(max((scanned_at - known_since) / AGE_FRACTION, shortest_gap), LONGEST_GAP)
    return min(scanned_at + gap, closes)
