"""``pi_rate_limited_...``: Stripe's rate limiter, which refuses a request before anything else is looked at."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import structlog

from refundflow_sandbox.scenarios import Behaviour, scenario_for
from refundflow_sandbox.settings import SandboxSettings
from refundflow_sandbox.stripe_errors import rate_limited

log = structlog.get_logger(__name__)

Call = Literal["create", "list"]


class RateLimits:
    """The first calls of each kind for a ``pi_rate_limited_...`` intent are answered 429 ``rate_limit``: nothing
    is executed, and nothing is stored under their idempotency key."""

    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._calls: Counter[tuple[Call, str]] = Counter()  # per kind of call and payment intent

    def check(self, call: Call, payment_intent: str) -> None:
        """Raise the 429 if this call of ``payment_intent`` is one of those throttled."""
        if scenario_for(payment_intent).behaviour is not Behaviour.RATE_LIMITED:
            return
        throttled = self._settings.rate_limited_calls if call == "create" else self._settings.rate_limited_lists
        self._calls[call, payment_intent] += 1
        made = self._calls[call, payment_intent]
        if made <= throttled:
            log.info("refunds.rate_limited", call=call, payment_intent=payment_intent, n=made)
            raise rate_limited(self._settings.rate_limit_retry_after_seconds)
