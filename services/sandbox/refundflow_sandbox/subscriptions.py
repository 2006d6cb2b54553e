"""The sandbox's subscriptions: enough of Stripe's to cancel now or at the period's end. No HTTP here."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from refundflow_sandbox.scenarios import Behaviour, subscription_behaviour

PERIOD_SECONDS = 30 * 24 * 3600


@dataclass
class Subscription:
    id: str
    status: str
    current_period_start: int
    current_period_end: int
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None

    def as_stripe_object(self) -> dict[str, Any]:
        return {"object": "subscription", **self.__dict__}


class SubscriptionNotFound(Exception):
    """``sub_missing_...``: Stripe knows no such subscription."""


class SimulatedFailure(Exception):
    """``sub_flaky_...``: this cancel answers 500, as Stripe may during an incident."""


class Subscriptions:
    """Any ``sub_...`` id exists (an active monthly subscription is invented on first use), except
    ``sub_missing_...``; cancelling ``sub_flaky_...`` fails its first ``flaky_failures`` times."""

    def __init__(self, clock: Callable[[], float] = time.time, *, flaky_failures: int = 2) -> None:
        self._clock = clock
        self._flaky_failures = flaky_failures
        self._cancel_calls: Counter[str] = Counter()
        self._subscriptions: dict[str, Subscription] = {}

    def get(self, subscription_id: str) -> Subscription:
        if subscription_behaviour(subscription_id) is Behaviour.MISSING:
            raise SubscriptionNotFound(subscription_id)
        if subscription_id not in self._subscriptions:
            now = int(self._clock())
            self._subscriptions[subscription_id] = Subscription(
                id=subscription_id, status="active", current_period_start=now, current_period_end=now + PERIOD_SECONDS
            )
        return self._subscriptions[subscription_id]

    def cancel_now(self, subscription_id: str) -> Subscription:
        subscription = self._before_cancel(subscription_id)
        if subscription.status != "canceled":
            subscription.status = "canceled"
            subscription.canceled_at = int(self._clock())
        return subscription

    def cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Subscription:
        subscription = self._before_cancel(subscription_id)
        subscription.cancel_at_period_end = cancel
        subscription.cancel_at = subscription.current_period_end if cancel else None
        return subscription

    def _before_cancel(self, subscription_id: str) -> Subscription:
        subscription = self.get(subscription_id)
        self._cancel_calls[subscription_id] += 1
        flaky = subscription_behaviour(subscription_id) is Behaviour.FLAKY
        if flaky and self._cancel_calls[subscription_id] <= self._flaky_failures:
            raise SimulatedFailure(subscription_id)
        return subscription
