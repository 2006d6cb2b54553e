"""Idempotent, ordered event consumption with retries and a dead-letter topic, for every service.

Per message: decode the CloudEvent (never handleable -> ``<topic>.dlq``), then in ONE PostgreSQL
transaction claim the event in the inbox and run the handler; the Kafka offset is committed only after
that transaction committed (FastStream's NACK_ON_ERROR policy, auto-commit off). A redelivered event
finds its inbox row and is skipped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from refundflow_shared import inbox
from refundflow_shared.crash_points import crash_point
from refundflow_shared.events import Event, EventData, InvalidEvent, decode_event, dlq_topic, topic_for
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.structured_logging import bind_event, unbind_event

log = structlog.get_logger(__name__)

D = TypeVar("D", bound=EventData)
Handler = Callable[[asyncpg.Connection, Event, Any], Awaitable[None]]


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a dependency hiccup, not a bad event)."""


# Worth a few retries: the same event may well succeed in a moment.
_RETRYABLE = (
    TransientError,
    TimeoutError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
)
# The database itself is gone: no event could be handled, so wait for it rather than dead-letter them all.
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, asyncpg.InterfaceError)


async def _raw_body(msg: KafkaMessage) -> bytes:
    return msg.body


class EventConsumer:
    """One consumer group for one service; handlers are registered per event data type."""

    def __init__(self, name: str, broker: KafkaBroker, pool: asyncpg.Pool, settings: ServiceSettings) -> None:
        self.name = name
        self._broker = broker
        self._pool = pool
        self._settings = settings
        self._handlers: dict[str, Handler] = {}

    def handles(
        self, data_type: type[D]
    ) -> Callable[[Callable[[asyncpg.Connection, Event, D], Awaitable[None]]], Callable[..., Awaitable[None]]]:
        """Register ``handler(conn, event, data)``; it runs inside the inbox transaction."""

        def register(
            handler: Callable[[asyncpg.Connection, Event, D], Awaitable[None]],
        ) -> Callable[..., Awaitable[None]]:
            self._handlers[topic_for(data_type.event_type, self._settings.topic_prefix)] = handler
            return handler

        return register

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    def subscribe(self) -> None:
        """Attach to the broker; call before the broker starts."""
        if not self._handlers:
            return
        self._broker.subscriber(
            *self.topics,
            group_id=self.name,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest",
            decoder=_raw_body,  # we decode (and dead-letter) ourselves; FastStream's JSON decoding would loop
        )(self.on_message)

    async def on_message(self, msg: KafkaMessage) -> None:
        record: ConsumerRecord[bytes, bytes] = msg.raw_message
        headers = {k: v.decode("utf-8", errors="replace") for k, v in (record.headers or ())}
        try:
            event = decode_event(headers, record.value)
        except InvalidEvent as exc:
            log.warning(
                "event_dead_lettered", topic=record.topic, offset=record.offset, reason=exc.code, error=exc.message
            )
            await self._dead_letter(record, exc.code, exc.message)
            return
        bind_event(event)
        try:
            await self._handle_with_retries(record, event)
        finally:
            unbind_event()

    async def _handle_with_retries(self, record: ConsumerRecord[bytes, bytes], event: Event) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._handle_once(record.topic, event)
                return
            except _RETRYABLE as exc:
                if attempt >= self._settings.consumer_retry_attempts:
                    log.error("event_retries_exhausted", attempts=attempt, error=repr(exc))
                    await self._dead_letter(record, "retries_exhausted", repr(exc))
                    return
                delay = self._backoff(attempt)
                log.warning("event_retrying", attempt=attempt, retry_in=round(delay, 3), error=repr(exc))
            except _UNAVAILABLE as exc:
                delay = self._backoff(attempt)
                log.warning("database_unavailable", attempt=attempt, retry_in=round(delay, 3), error=repr(exc))
            except Exception as exc:
                log.exception("event_handler_failed")
                await self._dead_letter(record, "handler_error", f"{type(exc).__name__}: {exc}")
                return
            await asyncio.sleep(delay)

    async def _handle_once(self, topic: str, event: Event) -> None:
        handler = self._handlers[topic]
        async with self._pool.acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, self.name, event):
                log.info("event_duplicate_skipped")
                return
            await handler(conn, event, event.data)
            crash_point(f"{self.name}.before_commit")
        log.info("event_handled")

    def _backoff(self, attempt: int) -> float:
        base: float = self._settings.consumer_retry_base_seconds * 2 ** (attempt - 1)
        return float(min(self._settings.consumer_retry_max_seconds, base)) * random.uniform(0.5, 1.0)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], code: str, error: str) -> None:
        headers = {k: v.decode("utf-8", errors="replace") for k, v in (record.headers or ())}
        await self.dead_letter(
            record.topic,
            record.key,
            record.value or b"",
            headers,
            code,
            error,
            position={"dlq_original_partition": str(record.partition), "dlq_original_offset": str(record.offset)},
        )

    async def dead_letter(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: dict[str, str],
        code: str,
        error: str,
        *,
        position: dict[str, str] | None = None,
    ) -> None:
        """Park a message on ``<topic>.dlq`` with why it failed; raising here leaves the offset uncommitted."""
        headers = {
            **headers,
            "dlq_reason": code,
            "dlq_error": error[:4000],
            "dlq_consumer": self.name,
            "dlq_original_topic": topic,
            **(position or {}),
            "dlq_failed_at": datetime.now(UTC).isoformat(),
        }
        await self._broker.publish(value, dlq_topic(topic), key=key, headers=headers)
