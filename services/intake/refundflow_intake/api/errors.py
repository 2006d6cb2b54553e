"""Every error leaves the API as ``{"error": {"code", "message"}}``; domain errors map to HTTP here only (an
unexpected error is answered as in every service, ``refundflow_shared.unexpected_errors``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from refundflow_intake.dashboard.policy_form import InvalidPolicyForm
from refundflow_intake.dashboard_sessions import CsrfRejected
from refundflow_intake.domain import (
    AmountNotRepresentable,
    ApiKeysManagedByOwners,
    ApprovalExceedsRequest,
    ApprovalRulesManagedByOwners,
    AutoApproveReasonNotAccepted,
    CurrencyMismatch,
    DomainError,
    DuplicatePayment,
    ExtensionConflictsWithCancel,
    IdempotencyKeyBlank,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    InvalidAmount,
    InvalidCursor,
    InvalidPeriod,
    InvalidProration,
    InvalidSubscriptionAction,
    InvalidTransition,
    LastApiKey,
    NotASubscription,
    NotFound,
    OpenRequestExists,
    OutboundUrlNotAllowed,
    PaymentIsDisputed,
    PlatformOnly,
    PortalDisabled,
    ProviderPaymentConflict,
    ProviderPaymentTaken,
    ReasonDetailsRequired,
    RefundExceedsRefundable,
    RefundStatus,
    SecondApprovalNeedsAPerson,
    TooManyApiKeys,
    TooManyProductOverrides,
    UnsupportedProviderPayment,
)
from refundflow_intake.one_time_links import LinkNotUsable
from refundflow_intake.passwords import PasswordChecksBusy, WeakPassword
from refundflow_intake.portal.tokens import InvalidPortalToken
from refundflow_intake.rate_limit import RateLimited
from refundflow_intake.roles import NotAllowedForRole
from refundflow_intake.team_members import EmailAlreadyRegistered, InvitationEnded, LastOwner
from refundflow_intake.webhook_endpoints import (
    ReplaySinceInFuture,
    ReplayWindowExceeded,
    TooManyWebhookEndpoints,
    WebhookEndpointExists,
)
from refundflow_shared.contention_retries import DatabaseBusy
from refundflow_shared.outbox import EventTooLarge
from refundflow_shared.unexpected_errors import UnexpectedErrorAnswer, internal_error

log = structlog.get_logger(__name__)

_STATUS_BY_ERROR: list[tuple[type[DomainError], int]] = [
    (NotFound, 404),
    (InvalidTransition, 409),
    (DuplicatePayment, 409),
    (ProviderPaymentTaken, 409),
    (ProviderPaymentConflict, 409),
    (PaymentIsDisputed, 409),
    (OpenRequestExists, 409),
    (IdempotencyKeyReused, 409),
    (LastApiKey, 409),
    (TooManyApiKeys, 409),
    (TooManyWebhookEndpoints, 409),
    (WebhookEndpointExists, 409),
    (PlatformOnly, 403),
    (CsrfRejected, 403),
    (InvalidAmount, 422),
    (InvalidPolicyForm, 422),
    (ApiKeysManagedByOwners, 403),
    (ApprovalRulesManagedByOwners, 403),
    (NotAllowedForRole, 403),
    (SecondApprovalNeedsAPerson, 409),
    (EmailAlreadyRegistered, 409),
    (LastOwner, 409),
    (InvitationEnded, 409),
    (LinkNotUsable, 410),
    (WeakPassword, 422),
    (RefundExceedsRefundable, 422),
    (AmountNotRepresentable, 422),
    (UnsupportedProviderPayment, 422),
    (OutboundUrlNotAllowed, 422),
    (ExtensionConflictsWithCancel, 422),
    (PortalDisabled, 409),
    (ReplayWindowExceeded, 422),
    (ReplaySinceInFuture, 422),
    (CurrencyMismatch, 422),
    (ReasonDetailsRequired, 422),
    (InvalidProration, 422),
    (InvalidSubscriptionAction, 422),
    (NotASubscription, 422),
    (ApprovalExceedsRequest, 422),
    (AutoApproveReasonNotAccepted, 422),
    (TooManyProductOverrides, 422),
    (InvalidCursor, 400),
    (IdempotencyKeyRequired, 400),
    (IdempotencyKeyBlank, 400),
    (InvalidPeriod, 400),
    (InvalidPortalToken, 401),
    (RateLimited, 429),
]

_NEW_KEY_PER_REQUEST = "a new unique key per request, the same key on its retries"
# An Idempotency-Key's refusals by the validation error the header's declaration (api.fields) gives.
_KEY_REFUSALS = {
    "missing": (IdempotencyKeyRequired.code, f"the Idempotency-Key header is required: {_NEW_KEY_PER_REQUEST}"),
    "string_pattern_mismatch": (
        IdempotencyKeyBlank.code,
        f"the Idempotency-Key header is blank (empty or only spaces): {_NEW_KEY_PER_REQUEST}",
    ),
}
# A read stopped at READ_STATEMENT_TIMEOUT_SECONDS (api.dependencies.Database.snapshot).
READ_TIMED_OUT = "read_timed_out"
_CODE_BY_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


class InvalidField(BaseModel):
    loc: list[str | int] = Field(description="where: query, path, header or body, then the name and any nesting")
    msg: str
    type: str = Field(description="the kind of mistake, e.g. missing, int_parsing, extra_forbidden")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable: clients branch on it")
    message: str
    param: str | None = Field(
        default=None,
        description="invalid_request: the first invalid input. A query, path or header parameter by its name"
        " (`limit`, `idempotency-key`); a body field by its path in the body, dots between its parts and list"
        " indices as numbers (`amount`, `proration.unused_days`, `events.0`); `body` for the body as a whole",
    )
    details: list[InvalidField] | None = Field(default=None, description="invalid_request: every invalid input")
    current_status: RefundStatus | None = Field(
        default=None, description="invalid_status_transition: the refund's status now"
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


def status_of(error: type[DomainError]) -> int:
    return next((s for cls, s in _STATUS_BY_ERROR if issubclass(error, cls)), 400)


def documented(
    *errors: type[DomainError], authenticated: bool = True, also: dict[int, list[str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` listing every error code an endpoint can answer, grouped by status (``also``: codes
    raised as ``ApiError``, e.g. a 503 when a dependency is down)."""
    # Any request may be refused for its size, before it is read (refundflow_shared.http_limits).
    codes: dict[int, list[str]] = {413: ["request_too_large"], 422: ["invalid_request"]}
    if authenticated:
        codes[401] = ["unauthorized"]
    for error in errors:
        codes.setdefault(status_of(error), []).append(error.code)
    for status, more in (also or {}).items():
        codes.setdefault(status, []).extend(more)
    # Any request may meet other transactions' locks on every try (refundflow_shared.contention_retries), and any
    # read may run past its statement timeout.
    codes.setdefault(503, []).extend([DatabaseBusy.code, READ_TIMED_OUT])
    return {
        status: {
            "model": ErrorBody,
            "description": "error codes: " + ", ".join(f"`{c}`" for c in found),
            "content": {"application/json": {"example": error_body(found[0], "what went wrong, in words")}},
        }
        for status, found in sorted(codes.items())
    }


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


class ApiError(Exception):
    """An HTTP-level refusal (authentication, for one) with a stable code."""

    retry_after_seconds: int | None = None  # sent as Retry-After when set

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# The dashboard's pages answer errors as pages: (request, status, code, message) -> a page, or None for the API.
PageErrors = Callable[[Request, int, str, str], Awaitable[Response | None]]


def unexpected_error_answer(pages: PageErrors) -> UnexpectedErrorAnswer:
    """An unexpected error's answer: a page where people read pages, else the API's 500."""

    async def answer(request: Request) -> Response:
        said = "Something went wrong on our side. Please try again."
        return await pages(request, 500, "internal_error", said) or await internal_error(request)

    return answer


def install_error_handlers(app: FastAPI, pages: PageErrors | None = None) -> None:
    async def page(request: Request, status: int, code: str, message: str) -> Response | None:
        return await pages(request, status, code, message) if pages else None

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if answer := await page(request, status_of(type(exc)), exc.code, exc.message):
            return answer
        headers = {"Retry-After": str(exc.retry_after_seconds)} if isinstance(exc, RateLimited) else None
        body = error_body(exc.code, exc.message, **exc.extra)
        return JSONResponse(body, status_code=status_of(type(exc)), headers=headers)

    @app.exception_handler(ApiError)
    @app.exception_handler(DatabaseBusy)
    @app.exception_handler(PasswordChecksBusy)
    async def api_error(request: Request, exc: ApiError | DatabaseBusy | PasswordChecksBusy) -> Response:
        retry = {"Retry-After": str(exc.retry_after_seconds)} if exc.retry_after_seconds else {}
        if answer := await page(request, exc.status, exc.code, exc.message):
            answer.headers.update(retry)
            return answer
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else retry
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=headers)

    @app.exception_handler(EventTooLarge)
    async def event_too_large(request: Request, exc: EventTooLarge) -> Response:
        if answer := await page(request, 422, exc.code, "What you entered is too long to be sent on: shorten it."):
            return answer
        return JSONResponse(error_body(exc.code, exc.message), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if answer := await page(request, 422, "invalid_request", "Some of what you entered is not valid: check it."):
            return answer
        errors = exc.errors()
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        for error in details:
            if error["loc"] == ["header", "idempotency-key"] and error["type"] in _KEY_REFUSALS:
                # Its own code: the client must send a key (a new one per request it means, the same on a retry).
                code, said = _KEY_REFUSALS[error["type"]]
                return JSONResponse(error_body(code, said, param="Idempotency-Key"), status_code=400)
        param = param_of(errors[0]["loc"]) if errors else None
        body = error_body("invalid_request", "the request body or parameters are invalid", param=param, details=details)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(asyncpg.DataError)
    async def unstorable_value(request: Request, exc: asyncpg.DataError) -> Response:
        # A value PostgreSQL cannot hold (a NUL byte in text, a number out of range): the input's fault, and the
        # schemas' bounds should have caught it first. Logged without the value.
        log.warning("unstorable_value", error=type(exc).__name__)
        said = "Some of what you entered cannot be stored: check it."
        if answer := await page(request, 422, "invalid_request", said):
            return answer
        return JSONResponse(
            error_body("invalid_request", "a value is out of range or holds characters that cannot be stored"),
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = _CODE_BY_STATUS.get(exc.status_code, "http_error")
        if answer := await page(request, exc.status_code, code, str(exc.detail)):
            return answer
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, say): a malformed request
            return JSONResponse(error_body("invalid_request", str(exc.detail)), status_code=422)
        headers = {"Allow": allowed_methods(request)} if exc.status_code == 405 else exc.headers
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)


def param_of(loc: Sequence[str | int]) -> str:
    """The input an invalid request's first error names, as ``ErrorDetail.param`` documents it: ("query", "limit")
    is ``limit``, ("body", "proration", "unused_days") ``proration.unused_days``, ("body",) ``body``."""
    where, *path = loc
    return ".".join(str(part) for part in path) if path else str(where)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def allowed_methods(request: Request) -> str:
    """Every method the path answers (RFC 9110's ``Allow``): Starlette's own 405 names only the first route that
    matched the path, and one path is often several routes (GET and POST /v1/refunds)."""
    routes = request.app.router.routes

    def matched(method: str) -> bool:
        return any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)

    # HEAD is answered as the GET (api.head_requests)
    allowed = [method for method in _METHODS if matched(method) or (method == "HEAD" and matched("GET"))]
    return ", ".join(allowed)
