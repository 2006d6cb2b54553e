"""Durations (``90s``, ``15m``, ``2h``, ``7d``) and points in time (RFC 3339, or a duration ago)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from refundflow_cli.outcomes import UsageProblem

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
# Longer means nothing here, and far longer is past what a date holds (Python's, or PostgreSQL's once subtracted).
LONGEST = timedelta(days=36_500)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageProblem(f"{text!r} is not a duration such as 90s, 15m, 2h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > LONGEST.total_seconds():
        raise UsageProblem(f"{text!r} is too long a duration: at most {LONGEST.days}d")
    return timedelta(seconds=seconds)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An RFC 3339 time with its UTC offset (``2026-11-20T10:00:00Z``), or a duration ago (``2h``)."""
    if _DURATION.fullmatch(text.strip()):
        return (now or datetime.now(UTC)) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(f"{text!r} is neither an RFC 3339 time nor a duration ago such as 2h") from None
    if moment.tzinfo is None:
        raise UsageProblem(f"{text!r} has no UTC offset: add Z or +01:00, for example")
    return moment
