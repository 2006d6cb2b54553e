"""The sandbox's subscriptions: enough of Stripe's to cancel now or at the period's end, and to move the period's
end with a trial (Stripe's way to push the next bill back without charging for the days). No HTTP here."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from refundflow_sandbox.scenarios import Behaviour, subscription_behaviour

PERIOD_SECONDS = 30 * 24 * 3600
MAX_TRIAL_SECONDS = 2 * 365 * 24 * 3600  # Stripe: trial_end at most two years from the billing cycle anchor
PRORATION_BEHAVIORS = frozenset({"create_prorations", "none", "always_invoice"})
_ENDED = frozenset({"canceled", "incomplete_expired"})


@dataclass
class Subscription:
    id: str
    status: str
    current_period_start: int
    current_period_end: int
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_stripe_object(self) -> dict[str, Any]:
        # Stripe's current API versions keep the period on the subscription's items; older ones on the
        # subscription itself: the sandbox answers both.
        item = {
            "id": f"si_{self.id.removeprefix('sub_')}",
            "object": "subscription_item",
            "current_period_start": self.current_period_start,
            "current_period_end": self.current_period_end,
        }
        items = {
            "object": "list",
            "data": [item],
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={self.id}",
        }
        return {
            "object": "subscription",
            **self.__dict__,
            "billing_cycle_anchor": self.current_period_end,
            "items": items,
        }


class SubscriptionNotFound(Exception):
    """``sub_missing_...``: Stripe knows no such subscription. Nor, for a cancel, a canceled one."""


class SimulatedFailure(Exception):
    """``sub_flaky_...``: this change answers 500, as Stripe may during an incident."""


class SubscriptionRefused(Exception):
    """Stripe's 400 for a change it will not make; ``param`` names the parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


class Subscriptions:
    """Any ``sub_...`` id exists (an active monthly subscription is invented on first use), except
    ``sub_missing_...``; changing ``sub_flaky_...`` (cancelling it, moving its period) fails its first
    ``flaky_failures`` times."""

    def __init__(self, clock: Callable[[], float] = time.time, *, flaky_failures: int = 2) -> None:
        self._clock = clock
        self._flaky_failures = flaky_failures
        self._change_calls: Counter[str] = Counter()
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
        subscription = self._before_change(subscription_id)
        if subscription.status == "canceled":  # Stripe: 404 resource_missing, though it can still be read
            raise SubscriptionNotFound(subscription_id)
        subscription.status = "canceled"
        subscription.canceled_at = int(self._clock())
        return subscription

    def cancel_at_period_end(self, subscription_id: str, cancel: bool) -> Subscription:
        subscription = self._before_change(subscription_id)
        self._refuse_if_ended(subscription)
        subscription.cancel_at_period_end = cancel
        subscription.cancel_at = subscription.current_period_end if cancel else None
        return subscription

    def set_trial_end(self, subscription_id: str, trial_end: int, proration_behavior: str | None) -> Subscription:
        """As Stripe: the subscription is trialing until ``trial_end``, which becomes the period's end and the next
        bill; a cancellation at the period's end moves with it."""
        now = int(self._clock())
        if trial_end <= now:
            raise SubscriptionRefused(
                "Invalid timestamp: must be an integer Unix timestamp in the future.", "trial_end"
            )
        if trial_end > now + MAX_TRIAL_SECONDS:
            raise SubscriptionRefused("trial_end can be at most two years from the billing cycle anchor.", "trial_end")
        if proration_behavior is not None and proration_behavior not in PRORATION_BEHAVIORS:
            raise SubscriptionRefused(f"Invalid proration_behavior: {proration_behavior[:40]}", "proration_behavior")
        subscription = self._before_change(subscription_id)
        self._refuse_if_ended(subscription)
        if subscription.status != "trialing":
            subscription.trial_start, subscription.current_period_start = now, now
        subscription.status = "trialing"
        subscription.trial_end = subscription.current_period_end = trial_end
        if subscription.cancel_at_period_end:
            subscription.cancel_at = trial_end
        return subscription

    @staticmethod
    def _refuse_if_ended(subscription: Subscription) -> None:
        if subscription.status in _ENDED:
            raise SubscriptionRefused(
                f"A {subscription.status} subscription can only update its cancellation_details and metadata."
            )

    def _before_change(self, subscription_id: str) -> Subscription:
        subscription = self.get(subscription_id)
        self._change_calls[subscription_id] += 1
        flaky = subscription_behaviour(subscription_id) is Behaviour.FLAKY
        if flaky and self._change_calls[subscription_id] <= self._flaky_failures:
            raise SimulatedFailure(subscription_id)
        return subscription
