from __future__ import annotations

from pydantic import SecretStr
from refundflow_shared.settings import ServiceSettings


class ProcessorSettings(ServiceSettings):
    http_port: int = 8001
    stripe_api_key: SecretStr = SecretStr("sk_test_refundflow_local")
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_timeout_seconds: float = 10.0

    # Transient provider failures retry from a durable schedule: base * 2^n (with jitter), capped.
    provider_retry_budget: int = 8
    provider_retry_base_seconds: float = 1.0
    provider_retry_max_seconds: float = 300.0
    executor_poll_interval_seconds: float = 1.0
