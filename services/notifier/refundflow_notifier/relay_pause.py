"""Pausing email while the SMTP relay is away or refuses us: the relay's fault, not any message's.

Each failure during an outage doubles the pause (capped); the first email the relay takes ends it. The messages
tried meanwhile are put back with no attempt spent, so an outage of any length gives none of them up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from refundflow_shared.backoff import exponential

_BASE_SECONDS, _MAX_SECONDS = 1.0, 60.0


class RelayPause:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures = 0
        self._until = 0.0

    def remaining(self) -> float:
        """Seconds until the worker may claim again (0: not paused)."""
        return max(0.0, self._until - self._clock())

    def trip(self) -> float | None:
        """The relay failed us: the new pause, or None when one is running (a send started before it failed too:
        that one's failure says nothing new)."""
        if self.remaining() > 0:
            return None
        self._failures += 1
        pause = exponential(self._failures, base=_BASE_SECONDS, cap=_MAX_SECONDS)
        self._until = self._clock() + pause
        return pause

    def clear(self) -> bool:
        """The relay took an email: True if it had been failing us."""
        recovered = self._failures > 0
        self._failures, self._until = 0, 0.0
        return recovered
