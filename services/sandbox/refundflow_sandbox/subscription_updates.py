"""``POST /v1/subscriptions/{id}`` as Stripe runs it: idempotency first (the answer stored under the key, a 400
or a 500 included), then the change, all of it or nothing: ``cancel_at_period_end``, ``trial_end`` (with
``proration_behavior``), ``metadata[key]`` (merged into the subscription's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from refundflow_sandbox.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyScope,
    IdempotencyStore,
    StoredResponse,
    request_fingerprint,
)
from refundflow_sandbox.metadata import METADATA_FIELD, TOO_MANY_KEYS, checked_metadata, merged_metadata
from refundflow_sandbox.refunds import new_id
from refundflow_sandbox.stripe_errors import (
    ApiError,
    internal_error,
    invalid_request,
    key_in_use,
    key_reused,
    key_too_long,
    subscription_missing,
)
from refundflow_sandbox.subscriptions import (
    SimulatedFailure,
    Subscription,
    SubscriptionNotFound,
    SubscriptionRefused,
    Subscriptions,
)

_KNOWN = frozenset({"cancel_at_period_end", "trial_end", "proration_behavior"})


def update_subscription(
    subscriptions: Subscriptions,
    idempotency: IdempotencyStore,
    *,
    api_key: str,
    idempotency_key: str | None,
    subscription_id: str,
    params: Sequence[tuple[str, str]],
) -> tuple[StoredResponse, bool]:
    """The answer, and whether it is a replay. Raises ApiError for answers that are not stored (bad parameters)."""
    change = _parse(params)  # a request failing validation stores nothing: it may be retried as it is
    if idempotency_key is None:
        return _answer(subscriptions, subscription_id, change), False
    if len(idempotency_key) > MAX_KEY_LENGTH:
        raise key_too_long()
    scope = IdempotencyScope(api_key=api_key, key=idempotency_key)
    try:
        stored = idempotency.begin(scope, request_fingerprint("POST", f"/v1/subscriptions/{subscription_id}", params))
    except IdempotencyKeyReused as error:
        raise key_reused(error) from error
    except IdempotencyKeyInUse as error:
        raise key_in_use(error) from error
    if stored is not None:
        return stored, True
    try:
        response = _answer(subscriptions, subscription_id, change)
    except BaseException:
        idempotency.release(scope)
        raise
    idempotency.complete(scope, response)
    return response, False


def _parse(params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    given: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in params:
        if match := METADATA_FIELD.match(name):
            metadata[match["key"]] = value
        elif name in _KNOWN:
            given[name] = value
        else:
            raise invalid_request(f"Received unknown parameter: {name[:100]}", param=name[:100])
    change: dict[str, Any] = {"metadata": checked_metadata(metadata)} if metadata else {}
    if "cancel_at_period_end" in given:
        if given["cancel_at_period_end"] not in ("true", "false"):
            raise invalid_request("cancel_at_period_end must be true or false.", param="cancel_at_period_end")
        change["cancel_at_period_end"] = given["cancel_at_period_end"] == "true"
    if "trial_end" in given:
        if not given["trial_end"].isdigit() or len(given["trial_end"]) > 12:
            raise invalid_request("Invalid integer: trial_end", param="trial_end")
        change["trial_end"] = int(given["trial_end"])
        change["proration_behavior"] = given.get("proration_behavior")
    if not change:
        raise invalid_request("Give cancel_at_period_end, trial_end or metadata (the sandbox's subscription updates).")
    return change


def _answer(subscriptions: Subscriptions, subscription_id: str, change: dict[str, Any]) -> StoredResponse:
    try:
        subscription = _apply(subscriptions, subscription_id, change)
    except SubscriptionNotFound:
        return _stored(subscription_missing(subscription_id))
    except SimulatedFailure:
        return _stored(internal_error())
    except SubscriptionRefused as refused:
        return _stored(invalid_request(refused.message, param=refused.param))
    return StoredResponse(200, json.dumps(subscription.as_stripe_object()).encode(), new_id("req_"))


def _apply(subscriptions: Subscriptions, subscription_id: str, change: dict[str, Any]) -> Subscription:
    metadata = None
    if "metadata" in change:  # checked before anything changes: a refused update changes nothing
        metadata = merged_metadata(subscriptions.get(subscription_id).metadata, change["metadata"])
        if metadata is None:
            raise SubscriptionRefused(TOO_MANY_KEYS, "metadata")
    if "trial_end" in change:
        subscriptions.set_trial_end(subscription_id, change["trial_end"], change["proration_behavior"])
    if "cancel_at_period_end" in change:
        subscriptions.cancel_at_period_end(subscription_id, change["cancel_at_period_end"])
    subscription = subscriptions.get(subscription_id)
    if metadata is not None:  # Stripe lets an ended subscription change its metadata
        subscription.metadata = metadata
    return subscription


def _stored(error: ApiError) -> StoredResponse:
    return StoredResponse(error.status_code, json.dumps(error.body()).encode(), new_id("req_"))
