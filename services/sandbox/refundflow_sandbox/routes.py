"""The HTTP endpoints: thin, Stripe-shaped. Rules live in refunds.py, idempotency in idempotency.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Depends, Header, Request, Response

from refundflow_sandbox import subscription_updates
from refundflow_sandbox.api_keys import ApiKeys, KeyRevoked
from refundflow_sandbox.auth import api_key_from_authorization
from refundflow_sandbox.idempotency import IdempotencyStore
from refundflow_sandbox.rate_limits import RateLimits
from refundflow_sandbox.refund_creation import Answer, RefundCreation
from refundflow_sandbox.refund_params import parse_list_refunds
from refundflow_sandbox.refunds import PaymentIntentMissing, RefundLedger, new_id
from refundflow_sandbox.scenarios import Behaviour, scenario_for
from refundflow_sandbox.settings import SandboxSettings
from refundflow_sandbox.stripe_errors import expired_api_key, internal_error, invalid_request, subscription_missing
from refundflow_sandbox.stripe_objects import list_object, paginate, refund_object
from refundflow_sandbox.subscriptions import SimulatedFailure, Subscription, SubscriptionNotFound, Subscriptions

router = APIRouter()
_MAX_FORM_FIELDS = 1000
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Sandbox:
    """Everything the endpoints use; one per app (see app.create_app)."""

    settings: SandboxSettings
    ledger: RefundLedger
    rate_limits: RateLimits
    refund_creation: RefundCreation
    subscriptions: Subscriptions
    api_keys: ApiKeys
    idempotency: IdempotencyStore


async def _sandbox(request: Request) -> Sandbox:  # a coroutine: a plain function would run in a thread
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _api_key(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    api_key = api_key_from_authorization(authorization)
    try:
        (await _sandbox(request)).api_keys.check(api_key)
    except KeyRevoked:
        raise expired_api_key(api_key) from None
    return api_key


SandboxDep = Annotated[Sandbox, Depends(_sandbox)]
ApiKeyDep = Annotated[str, Depends(_api_key)]


@router.post("/v1/refunds")
async def create_refund(
    request: Request,
    sandbox: SandboxDep,
    api_key: ApiKeyDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    traceparent: Annotated[str | None, Header()] = None,
) -> Response:
    # Stripe would ignore a traceparent; the sandbox logs it, so a refund's trace can be followed into it.
    log.info("refund_create_received", traceparent=traceparent[:100] if traceparent else None)
    params = await _form_params(request)
    answer = await sandbox.refund_creation.handle(api_key=api_key, idempotency_key=idempotency_key, params=params)
    return _stored_answer(answer, idempotency_key)


@router.get("/v1/refunds/{refund_id}")
async def retrieve_refund(refund_id: str, sandbox: SandboxDep, _api_key: ApiKeyDep) -> dict[str, Any]:
    return refund_object(sandbox.ledger.get(refund_id))


@router.get("/v1/refunds")
async def list_refunds(request: Request, sandbox: SandboxDep, _api_key: ApiKeyDep) -> dict[str, Any]:
    query = parse_list_refunds(request.query_params.multi_items())
    sandbox.rate_limits.check("list", query.payment_intent or "")
    if query.payment_intent and scenario_for(query.payment_intent).behaviour is Behaviour.MISSING:
        raise PaymentIntentMissing(f"No such payment_intent: '{query.payment_intent}'")
    refunds = sandbox.ledger.list_refunds(payment_intent=query.payment_intent, charge=query.charge)
    try:
        page, has_more = paginate(
            refunds, limit=query.limit, starting_after=query.starting_after, ending_before=query.ending_before
        )
    except KeyError as error:
        cursor = "starting_after" if query.starting_after else "ending_before"
        raise invalid_request(f"No such refund: {error}", code="resource_missing", param=cursor) from error
    return list_object([refund_object(r) for r in page], has_more=has_more, url="/v1/refunds")


def _subscription_answer(subscription_id: str, act: Callable[[str], Subscription]) -> dict[str, Any]:
    try:
        return act(subscription_id).as_stripe_object()
    except SubscriptionNotFound:
        raise subscription_missing(subscription_id) from None
    except SimulatedFailure:
        raise internal_error() from None


@router.get("/v1/subscriptions/{subscription_id}")
async def retrieve_subscription(subscription_id: str, sandbox: SandboxDep, _api_key: ApiKeyDep) -> dict[str, Any]:
    return _subscription_answer(subscription_id, sandbox.subscriptions.get)


@router.post("/v1/subscriptions/{subscription_id}/cancel")
async def cancel_subscription(subscription_id: str, sandbox: SandboxDep, _api_key: ApiKeyDep) -> dict[str, Any]:
    """Cancel now (Stripe: DELETE /v1/subscriptions/{id}, or POST .../cancel)."""
    return _subscription_answer(subscription_id, sandbox.subscriptions.cancel_now)


@router.delete("/v1/subscriptions/{subscription_id}")
async def delete_subscription(subscription_id: str, sandbox: SandboxDep, _api_key: ApiKeyDep) -> dict[str, Any]:
    return _subscription_answer(subscription_id, sandbox.subscriptions.cancel_now)


@router.post("/v1/subscriptions/{subscription_id}")
async def update_subscription(
    subscription_id: str,
    request: Request,
    sandbox: SandboxDep,
    api_key: ApiKeyDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """``cancel_at_period_end`` (true/false), or ``trial_end`` with ``proration_behavior`` (moves the period's end)."""
    params = await _form_params(request)
    response, replayed = subscription_updates.update_subscription(
        sandbox.subscriptions,
        sandbox.idempotency,
        api_key=api_key,
        idempotency_key=idempotency_key,
        subscription_id=subscription_id,
        params=params,
    )
    return _stored_answer(Answer(response, replayed=replayed), idempotency_key)


async def _form_params(request: Request) -> list[tuple[str, str]]:
    """The call's parameters, form-encoded in its body as Stripe takes them (and its SDK sends them). Parsed
    here, not by Starlette's form parser (python-multipart): that was a tenth to a sixth of the sandbox's CPU."""
    body = await request.body()
    if not body:
        return []
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise invalid_request("Invalid request: parameters must be form-encoded (application/x-www-form-urlencoded).")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, errors="strict", max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("Invalid request: the form-encoded body could not be read.") from None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _stored_answer(answer: Answer, idempotency_key: str | None) -> Response:
    stored = answer.response
    headers: dict[str, str] = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
        headers["Original-Request"] = stored.request_id
        headers["Request-Id"] = new_id("req_")
    else:
        headers["Request-Id"] = stored.request_id
    return Response(content=stored.body, status_code=stored.status_code, media_type="application/json", headers=headers)
