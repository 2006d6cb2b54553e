"""Events that must wait for another topic's event: a ``refund.submit`` or an external refund naming a payment not
registered yet (billing's ``payment.succeeded`` comes on its own topic), a ``refund.reversed`` read before its
refund's ``refund.succeeded``.

The awaited event has the same key, so the same partition number on its topic: the consumer's lane for it. Retried
in place, the waiting event held that lane, and the awaited event was never read before the retries ran out. So
the waiting event is parked instead (handled: in the inbox's transaction) and applied in the transaction that
records what it awaits, through the same function; one still waiting at its deadline is settled by ``expire`` as
the consumer settles an event it cannot handle.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg
import structlog

from refundflow_shared.consumer import EventConsumer, infrastructure_away
from refundflow_shared.dead_letters import dead_letter_alert, needs_a_person
from refundflow_shared.error_descriptions import describe_failure
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.event_decoding import InvalidEvent, decode_event
from refundflow_shared.events import Event, EventType, topic_for
from refundflow_shared.outbox import add_event
from refundflow_shared.structured_logging import bound
from refundflow_shared.wakeup_loop import is_recoverable

log = structlog.get_logger(__name__)

# (conn, event, waited): apply the event, or raise Awaits; ``waited``: its wait is over, give the final answer.
Apply = Callable[[asyncpg.Connection, Event, bool], Awaitable[None]]


class Awaits(Exception):
    """The event cannot be applied before the event ``key`` names is recorded."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(why)
        self.key = key


def payment_registered(merchant_id: str, payment_id: str) -> str:
    return f"payment:{merchant_id}:{payment_id}"


def refund_outcome(refund_id: str) -> str:
    return f"refund_outcome:{refund_id}"


class AwaitingEvents:
    """The events of the types registered with ``applies``, applied or parked (``handle``), resumed (``resume``)
    and settled at their deadline (``expire``)."""

    def __init__(
        self, consumer: EventConsumer, topic_prefix: str, wait: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self._consumer = consumer
        self._topic_prefix = topic_prefix
        self.wait = wait
        self._clock = clock
        self._apply: dict[EventType, Apply] = {}

    def applies(self, event_type: EventType, apply: Apply) -> None:
        self._apply[event_type] = apply

    async def handle(self, conn: asyncpg.Connection, event: Event) -> None:
        """Apply ``event``, or park it until what it awaits is recorded (``resume``), or its deadline."""
        try:
            await self._apply[event.type](conn, event, False)
        except Awaits as awaiting:
            await conn.execute(
                "INSERT INTO awaiting_events (event_id, event_type, awaits, headers, data, deadline)"
                " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) ON CONFLICT (event_id) DO NOTHING",
                event.id,
                event.type.value,
                awaiting.key,
                json.dumps(event.kafka_headers()),
                event.kafka_value().decode(),
                self._clock() + self.wait,
            )
            log.info("event_awaiting", awaits=awaiting.key, why=str(awaiting))

    async def resume(self, conn: asyncpg.Connection, key: str) -> None:
        """Apply the events parked for ``key`` (just recorded), oldest first, in the caller's transaction. Each in a
        savepoint: one that fails stays parked, for ``expire`` to settle, and never fails the event it awaited."""
        parked = await conn.fetch(
            f"SELECT {_PARKED} FROM awaiting_events WHERE awaits = $1 ORDER BY seq FOR UPDATE", key
        )
        for row in parked:
            try:
                async with conn.transaction():
                    await conn.execute("DELETE FROM awaiting_events WHERE event_id = $1", row["event_id"])
                    await self.handle(conn, _parked_event(row))  # one that no longer decodes stays, too
            except Exception as exc:
                if infrastructure_away(exc) is not None:  # waited out, as the consumer waits
                    raise
                error = describe_failure(exc)
                log.error("awaiting_event_not_resumed", event_id=str(row["event_id"]), awaits=key, error=error)

    async def expire(self, conn: asyncpg.Connection, *, batch: int = 100) -> int:
        """Give the events whose deadline passed their final answer (up to ``batch``; returns how many): applied
        once more as they would be on their last try, or dead-lettered as the consumer does when retries run out."""
        due = await conn.fetch(
            f"SELECT {_PARKED} FROM awaiting_events WHERE deadline <= $1"
            " ORDER BY deadline, seq LIMIT $2 FOR UPDATE SKIP LOCKED",
            self._clock(),
            batch,
        )
        for row in due:
            await conn.execute("DELETE FROM awaiting_events WHERE event_id = $1", row["event_id"])
            try:
                event = _parked_event(row)
            except InvalidEvent as exc:  # parked by a version that wrote another schema: kept on its DLQ as it was
                await self._dead_letter_undecodable(conn, row, exc)
                continue
            with bound(event):  # its ids on every line, as the consumer's handling has them
                await self._settle(conn, event)
        return len(due)

    async def _settle(self, conn: asyncpg.Connection, event: Event) -> None:
        try:
            async with conn.transaction():
                await self._apply[event.type](conn, event, True)
        except Awaits as awaiting:
            why = f"{awaiting}, after waiting {self.wait.total_seconds():g} s for it"
            await self._dead_letter(conn, event, "retries_exhausted", why)
        except Exception as exc:
            if infrastructure_away(exc) is not None:  # waited out, as the consumer waits
                raise
            await self._dead_letter(conn, event, "handler_error", describe_failure(exc))

    async def _dead_letter(self, conn: asyncpg.Connection, event: Event, code: str, error: str) -> None:
        """As the consumer's own: on ``<topic>.dlq``, with a team alert about a refund, and no longer in the inbox, so
        that ``dlq replay`` handles it again."""
        topic = topic_for(event.type, self._topic_prefix)
        log.error("event_dead_lettered", topic=topic, event_id=str(event.id), reason=code, error=error)
        await conn.execute("DELETE FROM inbox WHERE consumer = $1 AND event_id = $2", self._consumer.name, event.id)
        if needs_a_person(event):
            await add_event(conn, dead_letter_alert(event, topic, code, self._consumer.name), source=INTAKE.source)
        # Published before the commit: should it fail, the next run dead-letters it again (at least once).
        await self._consumer.dead_letter(
            topic, event.partition_key.encode(), event.kafka_value(), event.kafka_headers(), code, error
        )

    async def _dead_letter_undecodable(self, conn: asyncpg.Connection, row: asyncpg.Record, exc: InvalidEvent) -> None:
        """As ``_dead_letter``, its value as it was parked (no team alert: there is no refund to name)."""
        headers: dict[str, str] = json.loads(row["headers"])
        topic = topic_for(EventType(row["event_type"]), self._topic_prefix)
        log.error("event_dead_lettered", topic=topic, event_id=str(row["event_id"]), reason=exc.code, error=exc.message)
        await conn.execute(
            "DELETE FROM inbox WHERE consumer = $1 AND event_id = $2", self._consumer.name, row["event_id"]
        )
        key = headers.get("ce_partitionkey", "").encode()
        await self._consumer.dead_letter(topic, key, row["data"].encode(), headers, exc.code, exc.message)

    async def watch(self, pool: asyncpg.Pool, *, interval: float, batch: int = 100) -> None:
        """Settle what is due every ``interval`` seconds (at once again while full batches come back) until
        cancelled."""
        while True:
            settled = 0
            try:
                async with pool.acquire() as conn, conn.transaction():
                    settled = await self.expire(conn, batch=batch)
            except Exception as exc:
                if not is_recoverable(exc):
                    raise
                log.warning("awaiting_events_check_failed", error=repr(exc))
            if settled < batch:
                await asyncio.sleep(interval)


_PARKED = "event_id, event_type, headers::text, data::text"


def _parked_event(row: asyncpg.Record) -> Event:
    headers: dict[str, str] = json.loads(row["headers"])
    return decode_event(headers, row["data"].encode())
