"""Stripe's error shape, and the one place where sandbox errors become HTTP answers."""

from __future__ import annotations

from typing import Any

from refundflow_sandbox.idempotency import MAX_KEY_LENGTH, IdempotencyKeyInUse, IdempotencyKeyReused
from refundflow_sandbox.refunds import RefundNotFound, RefundRuleError


class ApiError(Exception):
    """An answer in Stripe's ``{"error": {...}}`` shape with its HTTP status."""

    def __init__(
        self,
        status_code: int,
        error_type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid_request(message: str, *, code: str | None = None, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, code=code, param=param)


def from_rule_error(error: RefundRuleError) -> ApiError:
    status_code = 404 if isinstance(error, RefundNotFound) else 400
    return ApiError(status_code, "invalid_request_error", error.message, code=error.code, param=error.param)


def key_reused(error: IdempotencyKeyReused) -> ApiError:
    return ApiError(
        400,
        "idempotency_error",
        f"Keys for idempotent requests can only be used with the same parameters they were first used "
        f"with. Try using a key other than '{error}' if you meant to execute a different request.",
    )


def key_in_use(error: IdempotencyKeyInUse) -> ApiError:
    # Real Stripe answers 409 with this code as an invalid_request_error.
    return ApiError(
        409,
        "invalid_request_error",
        f"There is currently another in-progress request using this Idempotent Key '{error}' (that "
        "probably means you submitted twice, and the other request is still going through). "
        "Please try again later.",
        code="idempotency_key_in_use",
    )


def rate_limited(retry_after_seconds: int) -> ApiError:
    # Stripe's 429: the request was not executed, nothing is stored under its key, and it should be sent again.
    return ApiError(
        429,
        "invalid_request_error",
        "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
        code="rate_limit",
        headers={"Retry-After": str(retry_after_seconds), "Stripe-Should-Retry": "true"},
    )


def key_too_long() -> ApiError:
    return invalid_request(f"Keys for idempotent requests can only be {MAX_KEY_LENGTH} characters long.")


def internal_error() -> ApiError:
    return ApiError(
        500,
        "api_error",
        "An unknown error occurred while processing your request. (sandbox: simulated failure)",
    )


def missing_api_key() -> ApiError:
    return ApiError(
        401,
        "invalid_request_error",
        "You did not provide an API key. You need to provide your API key in the Authorization header, "
        "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
    )


def invalid_api_key(api_key: str) -> ApiError:
    shown = f"{api_key[:8]}***{api_key[-4:]}" if len(api_key) > 12 else "***"
    return ApiError(
        401,
        "invalid_request_error",
        f"Invalid API Key provided: {shown} (the sandbox accepts any key starting with sk_test_)",
    )


def expired_api_key(api_key: str) -> ApiError:
    shown = f"{api_key[:8]}***{api_key[-4:]}" if len(api_key) > 12 else "***"
    return ApiError(401, "invalid_request_error", f"Expired API Key provided: {shown}", code="api_key_expired")


def subscription_missing(subscription_id: str) -> ApiError:
    return ApiError(
        404, "invalid_request_error", f"No such subscription: '{subscription_id}'", code="resource_missing", param="id"
    )
