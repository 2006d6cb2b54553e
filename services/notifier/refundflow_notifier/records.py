"""The notifier's records, as its repositories read them: typed, frozen, no I/O.

Each is built once from an ``asyncpg.Record`` next to the SQL that selects its columns (``message_queue``,
``webhook_store``, ``delivery_log``); workers and routes read attributes, so mypy checks every use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"  # the merchant's Slack-compatible webhook, its URL sealed in merchant_settings


@dataclass(frozen=True)
class ClaimedMessage:
    """A queued message leased for sending."""

    id: int
    event_id: uuid.UUID
    merchant_id: str
    channel: Channel
    kind: str
    recipient: str
    body: bytes  # a pending message always has it (it is wiped once the message is done)
    attempts: int  # counting this one
    traceparent: str | None
    sealed_slack_webhook_url: str | None  # the merchant's, for a Slack message; None if it has none (any more)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A webhook delivery leased for a call, with its endpoint and the event as it is signed."""

    id: int
    endpoint_id: str
    event_id: uuid.UUID
    attempts: int  # counting this one
    merchant_id: str
    url: str
    encrypted_secret: str
    payload: str
    traceparent: str | None
    previous_encrypted_secret: str | None = None  # a rolled secret's predecessor, while it still signs too


@dataclass(frozen=True)
class DeliveredAttempt:
    """A delivery's attempt the endpoint answered with a 2xx."""

    delivery: ClaimedDelivery
    attempted_at: datetime
    status_code: int
    latency_ms: int
    note: str | None  # response_truncated: the answer's body was not read to the end


@dataclass(frozen=True)
class EndpointState:
    """A merchant's webhook endpoint as its delivery log shows it."""

    id: str
    merchant_id: str
    url: str
    event_types: list[str]
    enabled: bool
    deleted: bool
    consecutive_failures: int
    disabled_reason: str | None


@dataclass(frozen=True)
class DeliveryAttempt:
    attempt: int
    attempted_at: str  # as PostgreSQL renders it in JSON (the delivery log's shape since its first version)
    status_code: int | None
    latency_ms: int
    error: str | None


@dataclass(frozen=True)
class LoggedDelivery:
    """One delivery in an endpoint's delivery log, with every attempt."""

    id: int
    event_id: uuid.UUID
    event_type: str
    replay: bool
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[DeliveryAttempt]
