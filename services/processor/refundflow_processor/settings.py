from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from refundflow_shared.settings import REFUND_PATH_FETCH_MAX_WAIT_MS, FetchMaxWaitMs, ServiceSettings

STRIPE_API = "https://api.stripe.com"


class ProcessorSettings(ServiceSettings):
    http_port: int = 8001
    consumer_fetch_max_wait_ms: FetchMaxWaitMs = REFUND_PATH_FETCH_MAX_WAIT_MS
    # Required: there is no safe default for a key that moves money.
    stripe_api_key: SecretStr
    stripe_api_base: str = STRIPE_API
    # The provider is the local sandbox: only then may the base be plain http (dev stack, tests, compose).
    stripe_sandbox: bool = False
    # The SDK's per-phase HTTP timeout (connect, read, ...).
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # Secret of the provider's webhook endpoint (Stripe's whsec_...); webhooks are refused without it.
    stripe_webhook_secret: SecretStr | None = None

    # Every step's provider calls (paging, and a refused cancel's read of the subscription, included) end within
    # this one deadline; a lease outlives it by the margin, so no other instance ever takes over work whose call
    # may still be running.
    provider_call_deadline_seconds: float = Field(default=20.0, gt=0)
    executor_lease_margin_seconds: float = Field(default=10.0, gt=0)
    executor_max_in_flight: int = Field(default=64, ge=1, le=1000)
    executor_poll_interval_seconds: float = Field(default=1.0, gt=0)

    # Calls without a definite answer retry from a durable schedule: base * 2^n (with jitter), capped, until the
    # budget of such calls per refund is spent; then reconciliation decides (never a guess).
    provider_retry_budget: int = Field(default=8, ge=1)
    provider_retry_base_seconds: float = Field(default=1.0, gt=0)
    provider_retry_max_seconds: float = Field(default=300.0, gt=0)
    # A budget spent only on calls without an answer (an outage), where the provider then proves it holds no refund
    # of ours, starts over with a new key; only this long after the approval does the refund fail instead.
    provider_outage_give_up_hours: float = Field(default=24.0, gt=0)
    # "Not executed, try later" answers (429, 409 idempotency_key_in_use) count against no budget: the call waits at
    # least the Retry-After they ask (up to this bound), and the team is alerted once an attempt has been answered
    # so for this long.
    provider_retry_after_max_seconds: float = Field(default=600.0, gt=0)
    provider_not_executed_alert_after_seconds: float = Field(default=3600.0, ge=0)
    # Consecutive 5xx answers of Stripe's own under one key before we reconcile (and, if no refund exists, a new key).
    provider_server_errors_before_reconcile: int = Field(default=2, ge=1)
    # Stripe keeps idempotency keys for 24 h; past that, we reconcile before any call with the key.
    provider_key_lifetime_seconds: float = Field(default=24 * 3600, gt=0)
    # The provider refused our credentials (401/403): calls pause for base * 2^n seconds, capped.
    provider_auth_pause_seconds: float = Field(default=5.0, gt=0)
    provider_auth_pause_max_seconds: float = Field(default=300.0, gt=0)

    # The sync job: refunds pending at the provider longer than this are polled; payments are scanned for
    # refunds made outside Refundflow, a batch per run, the longest due first: recent ones often, old ones seldom
    # (sync_schedule), and none once a scan came after their refund window closed.
    sync_interval_seconds: float = Field(default=60.0, gt=0)
    sync_pending_after_seconds: float = Field(default=300.0, ge=0)
    sync_payments_per_run: int = Field(default=100, ge=1)
    # How long after a payment a refund can still be made at the provider, for the sync job: a payment past it is
    # scanned no more. Set it to the longest refund window of the payment methods the platform takes.
    sync_refund_window_days: int = Field(default=365, ge=1)
    # A payment whose scan failed is retried after sync_interval * 2^failures, at most this long.
    sync_error_retry_max_seconds: float = Field(default=3600.0, gt=0)
    # A provider refund made for a refund id of ours we have no record of (after a database restore, until the
    # approval is read again) is never booked as external; the team is alerted once it stays so this long.
    sync_unrecorded_refund_alert_after_seconds: float = Field(default=3600.0, ge=0)

    @property
    def executor_lease_seconds(self) -> float:
        return self.provider_call_deadline_seconds + self.executor_lease_margin_seconds

    @model_validator(mode="after")
    def _refuse_unsafe_provider_settings(self) -> ProcessorSettings:
        base = urlsplit(self.stripe_api_base)
        shown = _scheme_and_host(self.stripe_api_base)
        if self.stripe_api_key.get_secret_value().startswith(("sk_live_", "rk_live_")) and (
            self.stripe_api_base.rstrip("/") != STRIPE_API
        ):
            raise ValueError(f"a live Stripe key may only be sent to {STRIPE_API}, not to STRIPE_API_BASE={shown}")
        if base.scheme != "https" and not self.stripe_sandbox:
            raise ValueError(
                f"STRIPE_API_BASE must be https ({shown}); set STRIPE_SANDBOX=true to talk to the local sandbox"
                " over http"
            )
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"STRIPE_API_BASE is not an http(s) URL with a host: {shown}")
        return self


def _scheme_and_host(url: str) -> str:
    """The URL as a refusal may print it: a proxy's user and password (``user:pw@``), a path or a query may be
    secrets, so only the scheme and the host (with its port) are shown."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.netloc else "(no scheme://host)"
