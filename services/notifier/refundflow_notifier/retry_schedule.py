"""When to try again: a fixed schedule of delays, the first one being the first attempt."""

from __future__ import annotations


def next_delay(schedule: list[float], attempts_made: int) -> float | None:
    """Seconds to wait before the next attempt after ``attempts_made`` attempts; None when the schedule is spent.

    ``schedule[0]`` is the delay of the first attempt (0: at once), ``schedule[n]`` the delay after the n-th.
    """
    if attempts_made < len(schedule):
        return schedule[attempts_made]
    return None


def is_success(status_code: int) -> bool:
    """Standard Webhooks: any 2xx is a success."""
    return 200 <= status_code < 300


def disables_endpoint(status_code: int) -> bool:
    """410 Gone: the receiver asks us to stop for good."""
    return status_code == 410
