"""Pausing provider calls while the provider refuses our credentials (401/403): a fault of configuration.

One per kind of call per process: refunds (the executor and the sync job) and subscriptions (cancels and
extensions), since a restricted key may be allowed one and refused the other. Each refusal doubles the pause
(capped); the first definite answer of the same kind ends that kind's episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from refundflow_shared.backoff import exponential

CallKind = Literal["refunds", "subscriptions"]


class ProviderPause:
    def __init__(
        self, kind: CallKind, base_seconds: float, max_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kind = kind
        self._base, self._max, self._clock = base_seconds, max_seconds, clock
        self._refusals = 0
        self._until = 0.0
        # The alerts of an episode are recorded for every instance (provider_auth_alerts); one that began before
        # this process did (before a restart or a new key, or in an instance since stopped) is still on record
        # until a definite answer clears it: the first one here does.
        self._cleared = False

    def remaining(self) -> float:
        """Seconds until calls may resume (0: not paused)."""
        return max(0.0, self._until - self._clock())

    @property
    def in_episode(self) -> bool:
        """Whether an episode's alerts may be on record: a definite answer of this kind must clear them."""
        return self._refusals > 0 or not self._cleared

    def trip(self) -> float:
        """The provider refused our credentials again: pause (longer each time); returns the pause."""
        self._refusals += 1
        pause = exponential(self._refusals, base=self._base, cap=self._max)
        self._until = max(self._until, self._clock() + pause)
        return pause

    def clear(self) -> bool:
        """A call of this kind got a definite answer (its alerts cleared): the key works for it. True if this
        process had been refused."""
        recovered = self._refusals > 0
        self._refusals, self._until, self._cleared = 0, 0.0, True
        return recovered
