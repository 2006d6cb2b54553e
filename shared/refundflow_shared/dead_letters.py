"""Parking what can never be handled on ``<topic>.dlq``, and telling the merchant's team when a refund is left
unfinished by it.

The dead-letter record carries the original body and headers plus why it failed (``dlq_reason``, a stable code,
and ``dlq_error``, which names fields and problems, never customers' data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from faststream.kafka import KafkaBroker

from refundflow_shared.backoff import exponential
from refundflow_shared.event_decoding import INVALID_EVENT_CODES
from refundflow_shared.events import Event, EventType, TeamAlertRaised, dlq_topic
from refundflow_shared.metrics import DLQ_MESSAGES
from refundflow_shared.outbox import add_event
from refundflow_shared.transient_faults import database_is_unavailable

log = structlog.get_logger(__name__)

# Why a consumer dead-letters a message it read: it could not be decoded, or its handler failed (a bug, or retries
# used up). A handler that refuses a command parks it with the refusal's own code besides.
REASONS = (*INVALID_EVENT_CODES, "undecodable", "event_id_reused", "handler_error", "retries_exhausted")
# Added to a replayed record (the dead letter it came from, by `refundflow dlq replay`), so a record that fails
# again says it was a replay.
REPLAY_HEADER = "refundflow_replayed_from"


def needs_a_person(event: Event) -> bool:
    """An event about one refund (approved, succeeded, failed, a cancel that goes with it, one made at the
    provider outside Refundflow...), or a dispute (its payment stays refundable), that was not handled: someone
    must look. A team alert itself is not alerted about again, or a broken alert would loop."""
    about_a_refund = any(isinstance(getattr(event.data, f, None), str) for f in ("refund_id", "provider_refund_id"))
    about_a_dispute = event.type == EventType.PAYMENT_DISPUTED
    return event.type != EventType.TEAM_ALERT_RAISED and (about_a_refund or about_a_dispute)


def dead_letter_alert(event: Event, topic: str, code: str, consumer: str) -> TeamAlertRaised:
    """The team's alert for a dead-lettered event that ``needs_a_person`` (no PII in it)."""
    data = event.data
    disputed = event.type == EventType.PAYMENT_DISPUTED
    return TeamAlertRaised(
        merchant_id=data.merchant_id,
        kind="event_dead_lettered",
        title="A dispute of this payment could not be recorded; the payment may still be refunded"
        if disputed
        else "An event about this refund could not be handled; the refund may be unfinished",
        details={
            "topic": topic,
            "reason": code,
            "event_type": event.type.value,
            "event_id": str(event.id),
            "consumer": consumer,
        },
        payment_id=getattr(data, "payment_id", None),
        refund_id=getattr(data, "refund_id", None),
    )


class DeadLetterOffice:
    """Dead-letters for one consumer: publishes to ``<topic>.dlq`` and stages the team alerts."""

    def __init__(self, consumer: str, broker: KafkaBroker, pool: asyncpg.Pool, *, retry_max_seconds: float) -> None:
        self._consumer = consumer
        self._broker = broker
        self._pool = pool
        self._retry_max_seconds = retry_max_seconds

    def expect(self, topic: str, reasons: Iterable[str]) -> None:
        """Show the count of each reason for ``topic`` at 0 from now on: a series that first appeared at 1 would be
        no increase, and the alert on dead letters would miss the first."""
        for reason in reasons:
            DLQ_MESSAGES.labels(self._consumer, topic, reason)

    async def publish(
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
        """Park a message on ``<topic>.dlq`` with why it failed; raises when the broker did not take it."""
        reason = {
            "dlq_reason": code,
            "dlq_error": error[:4000],
            "dlq_consumer": self._consumer,
            "dlq_original_topic": topic,
            **(position or {}),
            "dlq_failed_at": datetime.now(UTC).isoformat(),
        }
        # The original plus our headers may be over the broker's limit: then keep the reason and say what was
        # dropped, the value first, then the original headers, then the key (a key alone may be near the limit).
        dropped = f"the original value ({len(value)} bytes)"
        smaller_and_smaller = [
            (value, key, {**headers, **reason}),
            (b"", key, {**headers, **reason, "dlq_dropped": f"{dropped}: too large to carry"}),
            (b"", key, {**reason, "dlq_dropped": f"{dropped} and headers: too large to carry"}),
            (b"", None, {**reason, "dlq_dropped": f"{dropped}, headers and key: too large to carry"}),
        ]
        *larger, smallest = smaller_and_smaller
        for carried, carried_key, carried_headers in larger:
            try:
                await self._broker.publish(carried, dlq_topic(topic), key=carried_key, headers=carried_headers)
                break
            except (MessageSizeTooLargeError, RecordTooLargeError):
                continue
        else:  # the reason alone: never too large, it is bounded
            carried, carried_key, carried_headers = smallest
            await self._broker.publish(carried, dlq_topic(topic), key=carried_key, headers=carried_headers)
        DLQ_MESSAGES.labels(self._consumer, topic, code).inc()

    async def publish_until_taken(
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
        """Publish, waiting out a broker that does not answer: skipping the message instead would lose it."""
        attempt = 0
        while True:
            try:
                await self.publish(topic, key, value, headers, code, error, position=position)
                return
            except Exception as exc:  # noqa: BLE001 - whatever it is, the message must not be skipped
                attempt += 1
                delay = exponential(attempt + 1, base=0.1, cap=self._retry_max_seconds)
                log.error("dead_letter_failed", topic=topic, reason=code, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)

    async def alert_team(self, event: Event, topic: str, code: str) -> None:
        """Stage a ``TeamAlertRaised`` for a dead-lettered event that ``needs_a_person``, in its own transaction (no
        PII in it)."""
        alert = dead_letter_alert(event, topic, code, self._consumer)
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await add_event(conn, alert, source=f"refundflow/{self._consumer}")
                return
            except Exception as exc:
                if not database_is_unavailable(exc):
                    raise
                attempt += 1
                delay = exponential(attempt + 1, base=0.1, cap=self._retry_max_seconds)
                log.warning("database_unavailable", attempt=attempt, retry_in=delay, error=repr(exc))
                await asyncio.sleep(delay)
