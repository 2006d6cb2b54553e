from __future__ import annotations

from pydantic import SecretStr

from refundflow_shared.settings import ServiceSettings


class ProcessorSettings(ServiceSettings):
    http_port: int = 8001
    stripe_api_key: SecretStr = SecretStr("sk_test_refundflow_local")
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_timeout_seconds: float = 10.0
    # Secret of the provider's webhook endpoint (Stripe's whsec_...); webhooks are refused without it.
    stripe_webhook_secret: SecretStr | None = None

    # Transient provider failures retry from a durable schedule: base * 2^n (with jitter), capped, until the
    # budget of provider calls per refund is spent; then the refund fails with provider_unavailable.
    provider_retry_budget: int = 8
    provider_retry_base_seconds: float = 1.0
    provider_retry_max_seconds: float = 300.0
    # Consecutive 5xx answers under one key before we reconcile (and, if no refund exists, take a new key).
    provider_server_errors_before_reconcile: int = 2
    # Stripe keeps idempotency keys for 24 h; past that, a retry must reconcile first.
    provider_key_lifetime_seconds: float = 24 * 3600
    executor_poll_interval_seconds: float = 1.0

    # The sync job: refunds pending at the provider longer than this are polled; payments are scanned for
    # refunds made outside Refundflow, a batch per run, least recently scanned first.
    sync_interval_seconds: float = 60.0
    sync_pending_after_seconds: float = 300.0
    sync_payments_per_run: int = 100
