"""The sandbox's one settings object, read from SANDBOX_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    """Where the sandbox listens and how its test behaviours are timed.

    Every field maps to an environment variable with the ``SANDBOX_`` prefix,
    e.g. ``pending_seconds`` is ``SANDBOX_PENDING_SECONDS``.
    """

    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=12111, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    # `pi_pending_...`: seconds until a pending refund reads as succeeded.
    pending_seconds: float = Field(default=3.0, ge=0)
    # `pi_timeout_...`: the client timeout the first POST is meant to outlast; it answers after
    # timeout_seconds + timeout_margin_seconds.
    timeout_seconds: float = Field(default=5.0, ge=0)
    timeout_margin_seconds: float = Field(default=1.0, gt=0)
    # `pi_flaky_...`: how many POSTs for the payment intent answer 500 before it behaves.
    flaky_failures: int = Field(default=2, ge=0)
    # `pi_rate_limited_...`: how many POSTs for the payment intent answer 429 `rate_limit` (not executed, not stored
    # under their key) before it behaves, how many listings of its refunds do, and the Retry-After they send.
    rate_limited_calls: int = Field(default=3, ge=0)
    rate_limited_lists: int = Field(default=0, ge=0)
    rate_limit_retry_after_seconds: int = Field(default=1, ge=0)

    # Every payment intent is a notional charge of this many minor units.
    charge_amount: int = Field(default=1_000_000, gt=0)
    default_currency: str = Field(default="usd", min_length=3, max_length=3)

    # Where `refund.updated` webhooks go (e.g. the processor's /v1/provider-webhooks/stripe), signed with
    # webhook_secret as Stripe does; no URL, no webhooks.
    webhook_url: str | None = None
    webhook_secret: str = "whsec_refundflow_sandbox"  # noqa: S105 - a test fixture, not a secret

    # Stripe keeps idempotency keys for at least 24 hours.
    idempotency_ttl_seconds: float = Field(default=24 * 60 * 60, gt=0)

    # `pi_late_failure_...`: seconds until a succeeded refund fails (Stripe's test card 4000000000005126).
    late_failure_seconds: float = Field(default=3.0, ge=0)
    # API keys answered 401 `api_key_expired` (comma-separated), as Stripe answers a rolled key; more can be
    # revoked (and restored) at run time through /v1/_sandbox/api_keys/{key}/revoke.
    revoked_api_keys: str = ""
    # Every provider call (/v1/..., not /v1/_sandbox/...) is answered after this many milliseconds.
    latency_ms: int = Field(default=0, ge=0, le=600_000)
