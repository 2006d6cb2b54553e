"""Wiring: one ledger, one idempotency store, the routes, and Stripe-shaped error answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow_sandbox.api_keys import ApiKeys
from refundflow_sandbox.idempotency import IdempotencyStore
from refundflow_sandbox.rate_limits import RateLimits
from refundflow_sandbox.refund_creation import RefundCreation
from refundflow_sandbox.refunds import RefundLedger, RefundRuleError
from refundflow_sandbox.routes import Sandbox, router
from refundflow_sandbox.sandbox_controls import control_router
from refundflow_sandbox.settings import SandboxSettings
from refundflow_sandbox.stripe_errors import ApiError, from_rule_error, invalid_request
from refundflow_sandbox.subscriptions import Subscriptions
from refundflow_sandbox.webhooks import send_refund_updates


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """A fresh sandbox (empty ledger, no idempotency keys) answering Stripe's refund API."""
    settings = settings or SandboxSettings()
    ledger = RefundLedger(
        charge_amount=settings.charge_amount,
        default_currency=settings.default_currency,
        pending_seconds=settings.pending_seconds,
        late_failure_seconds=settings.late_failure_seconds,
    )
    idempotency = IdempotencyStore(ttl_seconds=settings.idempotency_ttl_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sender = None
        if settings.webhook_url:
            sender = asyncio.create_task(send_refund_updates(ledger, settings.webhook_url, settings.webhook_secret))
        try:
            yield
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    app = FastAPI(title="Refundflow payment-provider sandbox", docs_url=None, redoc_url=None, lifespan=lifespan)
    rate_limits = RateLimits(settings)
    app.state.sandbox = Sandbox(
        settings=settings,
        ledger=ledger,
        rate_limits=rate_limits,
        refund_creation=RefundCreation(
            settings=settings, ledger=ledger, idempotency=idempotency, rate_limits=rate_limits
        ),
        subscriptions=Subscriptions(flaky_failures=settings.flaky_failures),
        api_keys=ApiKeys(key.strip() for key in settings.revoked_api_keys.split(",")),
        idempotency=idempotency,
    )
    app.include_router(router)
    app.include_router(control_router)
    _add_error_handlers(app)
    if settings.latency_ms:
        app.add_middleware(ProviderLatency, seconds=settings.latency_ms / 1000)
    return app


class ProviderLatency:
    """Every provider call is answered ``seconds`` late, as a distant provider would (throughput work): the
    answer is made at once and held back. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` (a task and a stream per
    request) cost the sandbox more CPU than the route that answered, and a distant provider's wait costs us none."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self._app, self._seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path.startswith("/v1/_sandbox/"):
            await self._app(scope, receive, send)
            return

        async def send_late(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(self._seconds)
            await send(message)

        await self._app(scope, receive, send_late)


def _add_error_handlers(app: FastAPI) -> None:
    def answer(error: ApiError) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content=error.body(), headers=error.headers)

    async def on_api_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return answer(error)

    async def on_rule_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RefundRuleError)
        return answer(from_rule_error(error))

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code in (404, 405):
            message = f"Unrecognized request URL ({request.method}: {request.url.path})."
        else:
            message = str(error.detail)
        return answer(ApiError(error.status_code, "invalid_request_error", message))

    async def on_validation_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0] if error.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return answer(invalid_request(str(first.get("msg", "Invalid request.")), param=param))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RefundRuleError, on_rule_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
