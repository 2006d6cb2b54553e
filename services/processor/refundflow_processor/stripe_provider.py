"""The Stripe adapter, through the official SDK (it also talks to our Stripe-compatible sandbox)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import stripe

from refundflow_processor.payment_provider import (
    LATEST_TIMESTAMP,
    ProviderAuthFailed,
    ProviderNotExecuted,
    ProviderRefund,
    ProviderRefused,
    ProviderStatus,
    ProviderSubscription,
    ProviderUnavailable,
)
from refundflow_shared.money import MAX_MINOR_UNITS
from refundflow_shared.stripe_amounts import AmountNotRepresentable, from_stripe_units, to_stripe_units
from refundflow_shared.stripe_ids import names_a_charge
from refundflow_shared.tracing import HTTP_HEADER, current_traceparent

T = TypeVar("T")
# Stripe's resource_missing for an object of the other mode: "...; a similar object exists in live mode, but a test
# mode key was used to make this request."
_OTHER_MODE = "a similar object exists in"

# Stripe's refund statuses, folded into ours. requires_action waits on the customer: still pending.
_STATUS: dict[str, ProviderStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "failed",
}


class StripeProvider:
    name = "stripe"

    def __init__(self, api_key: str, api_base: str, timeout_seconds: float) -> None:
        # aiohttp: a call costs a fifth of the CPU it costs through httpx. Its session opens on the first call,
        # inside the running loop; ``close`` ends it.
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout_seconds))
        # The SDK's own retries are off: ours run from a durable schedule and keep the idempotency key.
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base}, max_network_retries=0, http_client=self._http
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        # The currency too: the provider then refuses to refund a charge made in another currency.
        params: Any = {
            **_payment_param(payment_ref),
            "amount": _to_stripe_units(amount, currency),
            "currency": currency.lower(),
            "metadata": {"refund_id": refund_id},
        }
        options: Any = {"idempotency_key": idempotency_key}
        if (traceparent := current_traceparent()) is not None:  # Stripe ignores it; our sandbox logs it
            options["headers"] = {HTTP_HEADER: traceparent}
        refund = await _call(self._client.v1.refunds.create_async(params=params, options=options))
        return _to_provider_refund(refund)

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        return _to_provider_refund(await _call(self._client.v1.refunds.retrieve_async(provider_refund_id)))

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        params: Any = {**_payment_param(payment_ref), "limit": 100}
        refunds: list[ProviderRefund] = []
        while True:  # paged here, not by the SDK's iterator: each page is read as hostile input too
            page = _fields(await _call(self._client.v1.refunds.list_async(params=params)), "the list of refunds")
            data = page.get("data")
            if not isinstance(data, list):
                raise ProviderUnavailable("malformed answer: the list of refunds has no data")
            refunds += [_to_provider_refund(refund) for refund in data]
            if not data or page.get("has_more") is not True:
                return refunds
            params = {**params, "starting_after": refunds[-1].id}

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        subscriptions = self._client.v1.subscriptions
        if at_period_end:
            params: Any = {"cancel_at_period_end": True}
            answer = await _call(subscriptions.update_async(subscription_id, params=params))
        else:
            answer = await _call(subscriptions.cancel_async(subscription_id))
        subscription = _to_provider_subscription(answer, subscription_id)
        # At period end, Stripe sets cancel_at to the period's end; a cancellation now stamps canceled_at.
        ends = _fields(answer, f"subscription {subscription_id}").get("cancel_at" if at_period_end else "canceled_at")
        return replace(subscription, ends_at=_timestamp(ends, subscription_id))

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        answer = await _call(self._client.v1.subscriptions.retrieve_async(subscription_id))
        return _to_provider_subscription(answer, subscription_id)

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderSubscription:
        # Stripe's way to push the next bill back without charging for the days added: a trial until then, with
        # no proration (Stripe: "Using a trial to change the billing cycle").
        params: Any = {"trial_end": int(until.timestamp()), "proration_behavior": "none", "metadata": metadata}
        answer = await _call(
            self._client.v1.subscriptions.update_async(
                subscription_id, params=params, options={"idempotency_key": idempotency_key}
            )
        )
        return _to_provider_subscription(answer, subscription_id)


def _payment_param(payment_ref: str) -> dict[str, str]:
    """How Stripe is told which payment a refund is of: a charge (``ch_...``, or ``py_...`` for other payment
    methods) as ``charge``, a payment intent (``pi_...``) as ``payment_intent``; Stripe answers ``resource_missing``
    to either named as the other."""
    return {"charge": payment_ref} if names_a_charge(payment_ref) else {"payment_intent": payment_ref}


def _timestamp(value: Any, subscription_id: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= LATEST_TIMESTAMP:
        raise ProviderUnavailable(f"malformed answer for subscription {subscription_id}")
    return datetime.fromtimestamp(value, UTC)


def _to_provider_subscription(stripe_subscription: Any, subscription_id: str) -> ProviderSubscription:
    """The provider's subscription, read as hostile input. Stripe's newer API versions keep the period on the
    subscription's items; older ones on the subscription itself: the latest end of either (or of the trial)."""
    subscription = _fields(stripe_subscription, f"subscription {subscription_id}")
    if not isinstance(subscription.get("id"), str):
        raise ProviderUnavailable(f"malformed answer for subscription {subscription_id}")
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    ends = [subscription.get("current_period_end"), subscription.get("trial_end")]
    ends += [item.get("current_period_end") for item in data or [] if isinstance(item, dict)]
    period_ends = [t for t in (_timestamp(value, subscription_id) for value in ends) if t is not None]
    metadata = subscription.get("metadata")
    return ProviderSubscription(
        id=subscription["id"],
        status=str(subscription.get("status")),
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        ends_at=_timestamp(subscription.get("cancel_at") or subscription.get("canceled_at"), subscription_id),
        current_period_end=max(period_ends, default=None),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )


async def _call(request: Awaitable[T]) -> T:
    with _classified_errors():
        return await request


@contextmanager
def _classified_errors() -> Iterator[None]:
    """The SDK's errors sorted: not executed (try later), definite refusals, refused credentials, and failures
    without an answer."""
    try:
        with _not_executed_answers():
            yield
    except stripe.APIConnectionError as exc:
        raise ProviderUnavailable(f"{type(exc).__name__}: {exc.user_message or exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:  # the SDK passes on a failure while reading the answer's body
        raise ProviderUnavailable(f"{type(exc).__name__}: the answer did not arrive whole") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        code = exc.code or getattr(exc.error, "code", None) or type(exc).__name__
        raise ProviderAuthFailed(f"HTTP {exc.http_status}: {code}") from exc
    except (stripe.InvalidRequestError, stripe.CardError) as exc:
        if exc.code == "resource_missing" and _OTHER_MODE in str(exc.user_message or exc):
            # The object exists under the other mode's key (a test key for a live payment, or the reverse): the key
            # is wrong, not the refund.
            raise ProviderAuthFailed(f"HTTP {exc.http_status}: resource_missing in this key's mode") from exc
        # Stripe's own refusals (400, 404, 402, its error body read): definite.
        raise ProviderRefused(exc.code or f"http_{exc.http_status}", str(exc.user_message or exc)) from exc
    except stripe.StripeError as exc:
        # Anything else may hide a refund made: an unreadable answer (a proxy's page, whatever its status, or an
        # empty 2xx), a 409 or 5xx, a key that already ran with other parameters. The caller reconciles, never fails.
        # Only Stripe's own 5xx (its api_error body, stored for the key) says the key's request has finished; a load
        # balancer's 502/503/504 page does not (Stripe may still be making the refund), so it is no server error.
        status = exc.http_status or 0
        stripes_own = getattr(exc.error, "type", None) == "api_error"
        raise ProviderUnavailable(
            f"HTTP {status}: {exc.user_message or exc}", server_error=status >= 500 and stripes_own
        ) from exc


@contextmanager
def _not_executed_answers() -> Iterator[None]:
    """Stripe's answers that it did not execute the request, and that it should be sent again: a rate limit or a
    lock timeout (429), or the key's first request still running (409 ``idempotency_key_in_use``); unless Stripe
    says a retry is pointless (``Stripe-Should-Retry: false``)."""
    try:
        yield
    except stripe.StripeError as exc:
        headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
        code = exc.code or getattr(exc.error, "code", None)
        throttled = isinstance(exc, stripe.RateLimitError) or exc.http_status == 429
        in_use = exc.http_status == 409 and code == "idempotency_key_in_use"
        if not (throttled or in_use) or headers.get("stripe-should-retry") == "false":
            raise
        retry_after = _seconds(headers.get("retry-after"))
        raise ProviderNotExecuted(f"HTTP {exc.http_status}: {code or 'rate_limit'}", retry_after=retry_after) from exc


def _seconds(value: str | None) -> float | None:
    """A Retry-After of seconds (the form Stripe sends); None for anything else."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _to_stripe_units(amount: int, currency: str) -> int:
    """``amount`` (ISO minor units) as Stripe counts it; refused, never rounded, if Stripe cannot take it exactly
    (intake refuses such a request, so only an approval made before it did reaches here)."""
    try:
        return to_stripe_units(amount, currency)
    except AmountNotRepresentable as exc:
        raise ProviderRefused("amount_not_representable", str(exc)) from None


def _fields(answer: Any, what: str) -> dict[str, Any]:
    """A JSON object of the provider's answer (the SDK's object, or an object within one), as a plain dict; any
    other JSON value (null, a list, a string) is a malformed answer."""
    if isinstance(answer, stripe.StripeObject):
        answer = answer.to_dict()
    if not isinstance(answer, dict):
        raise ProviderUnavailable(f"malformed answer: {what} is not an object")
    return answer


def _to_provider_refund(stripe_refund: Any) -> ProviderRefund:
    """The provider's refund object, read as hostile input: anything malformed is no answer at all."""
    refund = _fields(stripe_refund, "the refund")
    refund_id, amount, currency, metadata = (refund.get(k) for k in ("id", "amount", "currency", "metadata"))
    if not (isinstance(refund_id, str) and 0 < len(refund_id) <= 255):
        raise ProviderUnavailable("malformed answer: the refund has no usable id")
    currency = currency.upper() if isinstance(currency, str) else ""
    if isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0:
        amount = from_stripe_units(amount, currency)
    if not (isinstance(amount, int) and not isinstance(amount, bool) and 0 <= amount <= MAX_MINOR_UNITS):
        raise ProviderUnavailable(f"malformed answer: refund {refund_id} has no usable amount")
    reason, payment_intent, charge = (refund.get(k) for k in ("failure_reason", "payment_intent", "charge"))
    return ProviderRefund(
        id=refund_id,
        status=_STATUS.get(str(refund.get("status") or ""), "pending"),
        amount=amount,
        currency=currency,
        failure_reason=reason if isinstance(reason, str) else None,
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
        payment_ref=payment_intent if isinstance(payment_intent, str) else None,
        charge=charge if isinstance(charge, str) else None,
    )


class InvalidWebhook(Exception):
    """The payload is not a genuine, fresh Stripe webhook (bad or missing signature, unreadable body)."""


# Stripe's events that carry a refund whose status may have changed.
REFUND_EVENT_TYPES = frozenset({"refund.updated", "refund.failed", "charge.refund.updated"})


def refund_from_webhook(payload: bytes, signature: str | None, secret: str) -> ProviderRefund | None:
    """Verify a webhook with the SDK; the refund it reports, or None for event types we do not act on."""
    try:
        event = stripe.Webhook.construct_event(payload, signature or "", secret)
    except (ValueError, stripe.SignatureVerificationError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    fields = _fields(event, "the event")
    if fields.get("type") not in REFUND_EVENT_TYPES:
        return None
    return _to_provider_refund(_fields(fields.get("data"), "the event's data").get("object"))
