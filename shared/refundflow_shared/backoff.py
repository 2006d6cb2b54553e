"""How long to wait before trying again, for every retry loop: exponential, capped, and spread out."""

from __future__ import annotations

import random


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """The delay before retry ``attempt`` (1: the first): ``base`` doubled each time, never over ``cap``."""
    return float(min(cap, base * 2 ** min(max(attempt - 1, 0), 60)))


def jittered(delay: float) -> float:
    """Between half and all of ``delay``: retries of many failures at once do not come back together."""
    return delay * random.uniform(0.5, 1.0)
