"""The one retry delay every loop uses (consumer, dead letters, wake-up loops, provider calls and pauses)."""

from __future__ import annotations

import pytest

from refundflow_shared.backoff import exponential, jittered


@pytest.mark.parametrize(("attempt", "delay"), [(0, 0.2), (1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (10_000, 5.0)])
def test_the_delay_doubles_from_the_base_and_never_passes_the_cap(attempt: int, delay: float) -> None:
    assert exponential(attempt, base=0.2, cap=5.0) == pytest.approx(delay)


def test_jitter_keeps_between_half_and_all_of_the_delay_and_spreads_them() -> None:
    delays = [jittered(8.0) for _ in range(200)]
    assert all(4.0 <= delay <= 8.0 for delay in delays)
    assert len(set(delays)) > 100
