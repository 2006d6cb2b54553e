"""``POST /v1/refunds`` as Stripe runs it: idempotency first, then the scenario's behaviour."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from refundflow_sandbox.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyScope,
    IdempotencyStore,
    StoredResponse,
    request_fingerprint,
)
from refundflow_sandbox.rate_limits import RateLimits
from refundflow_sandbox.refund_params import parse_create_refund
from refundflow_sandbox.refunds import RefundLedger, RefundRequest, RefundRuleError, new_id
from refundflow_sandbox.scenarios import Behaviour, scenario_for
from refundflow_sandbox.settings import SandboxSettings
from refundflow_sandbox.stripe_errors import (
    ApiError,
    from_rule_error,
    internal_error,
    key_in_use,
    key_reused,
    key_too_long,
)
from refundflow_sandbox.stripe_objects import refund_object

log = structlog.get_logger(__name__)

ENDPOINT = ("POST", "/v1/refunds")


@dataclass(frozen=True)
class Answer:
    response: StoredResponse
    replayed: bool = False


class RefundCreation:
    """Creates refunds through the idempotency layer, acting out each payment intent's scenario."""

    def __init__(
        self,
        *,
        settings: SandboxSettings,
        ledger: RefundLedger,
        idempotency: IdempotencyStore,
        rate_limits: RateLimits,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._idempotency = idempotency
        self._rate_limits = rate_limits
        self._sleep = sleep

    async def handle(self, *, api_key: str, idempotency_key: str | None, params: Sequence[tuple[str, str]]) -> Answer:
        """Answer one create call; raises ApiError for answers that are not stored under the key."""
        self._rate_limits.check("create", dict(params).get("payment_intent", ""))
        scope = self._claim_scope(api_key, idempotency_key)
        if scope is not None:
            stored = self._begin(scope, params)
            if stored is not None:
                log.info("idempotency.replayed", key=scope.key, status_code=stored.status_code)
                return Answer(stored, replayed=True)
        try:
            request = parse_create_refund(params)
            response, delay = self._execute(request)
        except BaseException:
            # Validation failed (or the sandbox broke) before anything was executed: store nothing.
            if scope is not None:
                self._idempotency.release(scope)
            raise
        try:
            if delay > 0:
                log.info("refund.slow_answer", payment_intent=request.payment, seconds=delay)
                await self._sleep(delay)
        finally:
            # Stored even if the caller hung up mid-sleep: the refund exists either way.
            if scope is not None:
                self._idempotency.complete(scope, response)
        return Answer(response)

    @staticmethod
    def _claim_scope(api_key: str, idempotency_key: str | None) -> IdempotencyScope | None:
        if idempotency_key is None:
            return None
        if len(idempotency_key) > MAX_KEY_LENGTH:
            raise key_too_long()
        return IdempotencyScope(api_key=api_key, key=idempotency_key)

    def _begin(self, scope: IdempotencyScope, params: Sequence[tuple[str, str]]) -> StoredResponse | None:
        try:
            return self._idempotency.begin(scope, request_fingerprint(*ENDPOINT, params))
        except IdempotencyKeyReused as error:
            log.info("idempotency.key_reused", key=scope.key)
            raise key_reused(error) from error
        except IdempotencyKeyInUse as error:
            log.info("idempotency.key_in_use", key=scope.key)
            raise key_in_use(error) from error

    def _execute(self, request: RefundRequest) -> tuple[StoredResponse, float]:
        """Run the endpoint; returns the response to store and how long to hold it back."""
        scenario = scenario_for(request.payment)
        attempt = self._ledger.record_attempt(request.payment)
        delay = 0.0
        if scenario.behaviour is Behaviour.TIMEOUT and attempt == 1:
            delay = self._settings.timeout_seconds + self._settings.timeout_margin_seconds

        if scenario.behaviour is Behaviour.FLAKY and attempt <= self._settings.flaky_failures:
            log.info("refund.simulated_failure", payment_intent=request.payment, attempt=attempt)
            return _error_response(internal_error()), delay
        try:
            refund = self._ledger.create(request, scenario)
        except RefundRuleError as error:
            log.info("refund.refused", payment_intent=request.payment, code=error.code)
            return _error_response(from_rule_error(error)), delay
        log.info(
            "refund.created",
            refund_id=refund.id,
            payment_intent=refund.payment_intent,
            amount=refund.amount,
            status=refund.status.value,
        )
        if scenario.behaviour is Behaviour.ERROR500_AFTER_CREATE:
            log.info("refund.simulated_failure_after_create", refund_id=refund.id)
            return _error_response(internal_error()), delay
        return _response(200, refund_object(refund)), delay


def _error_response(error: ApiError) -> StoredResponse:
    return _response(error.status_code, error.body())


def _response(status_code: int, body: dict[str, Any]) -> StoredResponse:
    return StoredResponse(status_code=status_code, body=json.dumps(body).encode(), request_id=new_id("req_"))
