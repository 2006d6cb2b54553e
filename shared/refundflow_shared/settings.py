"""Settings every service shares; each service extends this with its own, read from env vars."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/refundflow"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", description="prepended to every topic name (tests, shared clusters)")
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    # Outbox relay
    outbox_batch_size: int = 500
    outbox_poll_interval_seconds: float = 1.0

    # Consumers: transient failures retry in place with exponential backoff, then go to the DLQ.
    consumer_retry_attempts: int = 5
    consumer_retry_base_seconds: float = 0.2
    consumer_retry_max_seconds: float = 10.0

    topic_partitions: int = 6

    # Encrypts webhook signing secrets in events and at rest (intake and notifier): 32 bytes, base64.
    webhook_secret_key: SecretStr | None = None

    # Outbound URLs (webhooks, Slack) may reach loopback and private networks only when this is true: local
    # runs and tests set it, production must not (see refundflow_shared.outbound_urls).
    refundflow_allow_private_webhook_urls: bool = False

    # Retention: what is pruned, and after how long (the inbox must outlive any redelivery window).
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    outbox_retention_days: float = Field(default=7.0, gt=0)
    inbox_retention_days: float = Field(default=30.0, gt=0)
