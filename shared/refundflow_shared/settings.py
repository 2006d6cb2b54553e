"""Settings every service shares; each service extends this with its own, read from env vars."""

from __future__ import annotations

import ipaddress
import sys
from typing import Annotated, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from refundflow_shared.database import NOT_A_POSTGRES_URL, is_postgres_url
from refundflow_shared.event_decoding import DEFAULT_MAX_EVENT_BYTES
from refundflow_shared.secret_box import parse_key_ring

# Intake and the processor are on a refund's path (approve, provider, succeeded): their fetches wait at most this,
# for quicker hops on a broker that holds empty fetches (Tansu; see consumer_fetch_max_wait_ms).
REFUND_PATH_FETCH_MAX_WAIT_MS = 250
FetchMaxWaitMs = Annotated[int, Field(ge=1, le=10_000)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/refundflow"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field(default="", description="prepended to every topic name (tests, shared clusters)")
    log_level: LogLevel = "INFO"  # in any case: "debug" is DEBUG
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    # Connections to PostgreSQL: HTTP requests, the consumer, the relay and every worker's claims and records share
    # them; a task waits for one when all are taken.
    database_pool_size: int = Field(default=20, ge=2, le=500)

    # Outbox relay
    outbox_batch_size: int = 500
    outbox_poll_interval_seconds: float = 1.0
    # A row the broker refuses (not one it did not answer) is parked after this many attempts: an operator
    # retries it; the team is alerted; the rows behind it, of its key too, keep flowing.
    outbox_park_after_attempts: int = Field(default=5, ge=1)

    # The largest event (value plus headers): the outbox refuses bigger ones when they are written (so a request
    # gets a 422), consumers dead-letter them. Below the 1 MiB aiokafka and Kafka's brokers take by default.
    event_max_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1024, le=1024 * 1024 - 16 * 1024)

    # Consumers: transient failures retry in place with exponential backoff, then go to the DLQ.
    consumer_retry_attempts: int = 5
    consumer_retry_base_seconds: float = 0.2
    consumer_retry_max_seconds: float = 10.0
    # Consumers read batches: up to this many records, all handled in one transaction with one offset commit;
    # an idle consumer polls again after the timeout (the most an event waits to be read, when idle).
    consumer_batch_max_records: int = Field(default=500, ge=1, le=10_000)
    consumer_batch_timeout_ms: int = Field(default=20, ge=1, le=10_000)
    # The longest the broker may hold a fetch that finds nothing new. Kafka answers as soon as a record comes;
    # Tansu (the dev stack's broker) looks again only after half of what is left of the wait, so there a hop takes
    # ~120 ms (median) at Kafka's default of 500. Waiting less costs CPU under load (smaller batches, more fetches):
    # worth it on a refund's path only (README, Performance).
    consumer_fetch_max_wait_ms: FetchMaxWaitMs = 500
    # A consumer the broker does not hear from for this long leaves its group (its partitions go to the others).
    # Joining a group on Tansu takes about as long, so every start waits that long: the tests use 3000.
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)

    topic_partitions: int = 6
    # Durability: producers wait for every in-sync replica (acks=all), and a write needs this many of them.
    # 1 for a single local broker; production clusters use 3 and 2 (see the README).
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    # How long topics keep records: also the longest a record can be delivered again (a consumer group whose
    # offsets expired starts from the oldest record), so the inbox must remember handled events for longer.
    topic_retention_days: float = Field(default=7.0, gt=0)

    # Encrypts webhook signing secrets and Slack URLs in events and at rest (intake and notifier).
    # WEBHOOK_SECRET_KEYS is a key ring, "kid:base64,kid:base64" (the first seals; all open);
    # WEBHOOK_SECRET_KEY, one base64 key, is still read (it is the ring "k0:<key>"). See secret_box.
    webhook_secret_key: SecretStr | None = None
    webhook_secret_keys: SecretStr | None = None
    # The bearer token intake shows the notifier's internal API (delivery logs, replays); its own secret.
    refundflow_internal_token: SecretStr | None = None

    # Outbound URLs (webhooks, Slack) may reach loopback and private networks only when this is true: local
    # runs and tests set it, production must not (see refundflow_shared.outbound_urls).
    refundflow_allow_private_webhook_urls: bool = False

    # Retention: what is pruned, and after how long (the inbox must outlive any redelivery window). Dead-letter topics
    # keep records as long as the inbox; a dead letter can be replayed while the inbox outlives its replay on the
    # topic: INBOX_RETENTION_DAYS less TOPIC_RETENTION_DAYS (see kafka_topics, and the command line's dlq replay).
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    outbox_retention_days: float = Field(default=7.0, gt=0)
    inbox_retention_days: float = Field(default=30.0, gt=0)

    # HTTP: bodies over the cap are refused with 413 before they are read or authenticated; uvicorn closes idle
    # keep-alive connections, answers 503 past the concurrency limit and refuses oversized request heads.
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    http_keep_alive_seconds: int = Field(default=5, ge=1)
    http_max_concurrency: int = Field(default=1000, ge=1)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # The proxies whose X-Forwarded-For (and -Proto) uvicorn believes, comma-separated IPs or CIDRs: a request from
    # one is the forwarded client's, for every per-address limit; from any other peer the header is ignored.
    trusted_proxies: str = "127.0.0.1,::1"

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        proxies = [part.strip() for part in value.split(",") if part.strip()]
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy)
            except ValueError:
                raise ValueError("comma-separated IP addresses or CIDR networks") from None
        return ",".join(proxies)

    @field_validator("database_url")
    @classmethod
    def _a_postgres_url(cls, url: str) -> str:
        # Checked here, so the process stops naming the variable: asyncpg's own error quotes the URL, password and all.
        if not is_postgres_url(url):
            raise ValueError(NOT_A_POSTGRES_URL)
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name_in_any_case(cls, level: object) -> object:
        # The standard library's other names (WARN, FATAL) worked before the names were checked.
        if isinstance(level, str):
            return _LEVEL_ALIASES.get(level.upper(), level.upper())
        return level

    @field_validator("webhook_secret_key", "webhook_secret_keys")
    @classmethod
    def _a_well_formed_key_ring(cls, keys: SecretStr | None) -> SecretStr | None:
        # Checked here, so a bad ring stops the process with the settings' errors, not at its first seal. Empty is
        # no key, as it always was (compose files pass ``${WEBHOOK_SECRET_KEY:-}``).
        if keys is None or not keys.get_secret_value():
            return None
        parse_key_ring(keys.get_secret_value())  # its errors name key ids, never a key
        return keys

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError("TOPIC_MIN_INSYNC_REPLICAS cannot exceed TOPIC_REPLICATION_FACTOR")
        if self.inbox_retention_days <= self.topic_retention_days:
            raise ValueError("INBOX_RETENTION_DAYS must exceed TOPIC_RETENTION_DAYS: a record can be redelivered")
        if self.webhook_secret_keys is not None:
            # The ring wins; every SecretBox(settings.webhook_secret_key...) then opens and seals with it.
            self.webhook_secret_key = self.webhook_secret_keys
        return self


def settings_from_environment(settings_type: type[S], service: str) -> S:
    """The service's settings from its environment, or the process ends (exit code 1) with one line per problem,
    naming the variable and never its value: pydantic's own report echoes the input, secrets included."""
    try:
        return settings_type()
    except ValidationError as exc:
        problems = settings_problems(exc)
    except SettingsError as exc:  # a value that is not JSON where a list is expected; the message names the field
        problems = [str(exc)]
    sys.exit("\n".join(f"refundflow-{service} refuses to start: {problem}" for problem in problems))


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem, naming the variable (or, for a check across variables, saying which disagree), never
    its value: the services print these when they refuse to start, the command line when it refuses to run."""
    return [_problem(error["loc"], error["msg"]) for error in exc.errors(include_input=False, include_url=False)]


def _problem(location: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    if not location:  # a check across variables: its message names them
        return message
    return f"{str(location[0]).upper()}: {message}"
