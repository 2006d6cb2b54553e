"""Pausing email while the SMTP relay is away or refuses us: the relay's fault, not any message's.

Each failure during an outage doubles the pause (capped); the first email the relay takes ends it. The messages
tried meanwhile are put back with no attempt spent, so an outage of any length gives none of them up.

A policy refusal at RCPT (5.7.x) is the relay refusing us, for every address, until the relay is seen taking other
mail after refusing a message's address: then it refuses that address alone, and that message is rejected (waited out,
it would pause every email each time it came round).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from refundflow_shared.backoff import exponential

_BASE_SECONDS, _MAX_SECONDS = 1.0, 60.0
_REMEMBERED_REFUSALS = 10_000  # messages whose address the relay refused lately, by id: the oldest forgotten


class RelayPause:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures = 0
        self._until = 0.0
        self._last_taken: float | None = None  # when the relay last took an email
        self._recipient_refused: dict[int, float] = {}  # message id -> when the relay last refused its address

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
        self._failures, self._until, self._last_taken = 0, 0.0, self._clock()
        return recovered

    def refuses_only_this_address(self, message_id: int) -> bool:
        """The relay refused the message's address by its policy at RCPT: True when it did before and has taken
        other mail since (the address's refusal, for good), else False (the relay's, waited out)."""
        before = self._recipient_refused.pop(message_id, None)
        if before is not None and self._last_taken is not None and self._last_taken > before:
            return True
        if len(self._recipient_refused) >= _REMEMBERED_REFUSALS:
            del self._recipient_refused[next(iter(self._recipient_refused))]
        self._recipient_refused[message_id] = self._clock()
        return False
