"""Pausing provider calls while the provider refuses our credentials (401/403): a fault of configuration.

One per process, shared by the executor, the subscription cancels and the sync job. Each refusal doubles the
pause (capped); the first definite answer ends the episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from refundflow_shared.backoff import exponential


class ProviderPause:
    def __init__(self, base_seconds: float, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._base, self._max, self._clock = base_seconds, max_seconds, clock
        self._refusals = 0
        self._until = 0.0

    def remaining(self) -> float:
        """Seconds until calls may resume (0: not paused)."""
        return max(0.0, self._until - self._clock())

    @property
    def in_episode(self) -> bool:
        return self._refusals > 0

    def trip(self) -> float:
        """The provider refused our credentials again: pause (longer each time); returns the pause."""
        self._refusals += 1
        pause = exponential(self._refusals, base=self._base, cap=self._max)
        self._until = max(self._until, self._clock() + pause)
        return pause

    def clear(self) -> bool:
        """A call got a definite answer: the key works. True if that ended an episode."""
        ended = self._refusals > 0
        self._refusals, self._until = 0, 0.0
        return ended
