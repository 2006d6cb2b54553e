"""Idempotent, ordered event consumption with retries and a dead-letter topic, for every service.

The consumer reads batches (all the service's topics, one FastStream batch subscriber). Per batch: decode each
CloudEvent (never handleable -> ``<topic>.dlq``); then per partition number, side by side, in ONE PostgreSQL
transaction claim the events in the inbox (one insert) and run each handler, in the order read, so each key's
events keep their order (a handler may leave its writes to a ``finish``, run once per transaction, set-based, and
have a ``prepare`` read or write what it needs for all of them at once, before any of them runs). The
Kafka offsets are committed once, after those transactions committed (FastStream's NACK_ON_ERROR policy,
auto-commit off). A redelivered event finds its inbox row and is skipped; one whose id the row holds as another
type is another event reusing the id, dead-lettered (``event_id_reused``).

An event whose handler fails does not take the batch with it: the transaction is rolled back, the events before it
are handled again together and committed, the failing one is retried on its own (in place, with backoff, then
dead-lettered, exactly as a batch of one would be), then the rest of the batch follows. (A handler's writes are
undone by the rollback, so running it again has no effect twice; what a handler publishes itself, a refused
command's dead letter, is at-least-once anyway. A savepoint per event would cost two round trips each, always.)

No message can stop the consumer: whatever it holds, it is handled, or parked on the dead-letter topic with a
reason and the next one is read. (A record the Kafka client itself cannot read stops its own partition only, and
loses nothing: ``undecodable_records``.) Only the infrastructure is waited for: a database that
is away or overloaded (``transient_faults``), or a broker that does not take the dead letter.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, overload

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from refundflow_shared import inbox, tracing
from refundflow_shared.backoff import exponential, jittered
from refundflow_shared.crash_points import crash_point
from refundflow_shared.dead_letters import (
    REASONS,
    REPLAY_HEADER,
    DeadLetterOffice,
    needs_a_person,
)
from refundflow_shared.error_descriptions import describe_failure
from refundflow_shared.event_contract import ContractBroken, ServiceContract, contract_of
from refundflow_shared.event_decoding import InvalidEvent, decode_event, printable_headers, read_headers
from refundflow_shared.events import Event, EventData, EventType, topic_for
from refundflow_shared.kafka_topics import PARTITION_ASSIGNORS
from refundflow_shared.metrics import EVENTS_HANDLED, HANDLER_SECONDS, counts_on_commit
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.structured_logging import bound
from refundflow_shared.transient_faults import DatabaseUnavailable, broker_is_unavailable, database_is_unavailable
from refundflow_shared.undecodable_records import read_around_undecodable_records

log = structlog.get_logger(__name__)

D = TypeVar("D", bound=EventData)
P = TypeVar("P")
Handler = Callable[..., Awaitable[Any]]  # (conn, event, data), and what its ``prepare`` returned when it has one
Finish = Callable[[asyncpg.Connection, list[Any]], Awaitable[None]]
Prepare = Callable[[asyncpg.Connection, list[Event]], Awaitable[Any]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a dependency hiccup, not a bad event)."""


class _RollBack(Exception):
    """A handler failed: undo the batch's transaction."""


# Worth a few retries, then the dead-letter topic: the same event may well succeed in a moment.
_RETRYABLE = (TransientError, TimeoutError)


def infrastructure_away(failure: Exception) -> str | None:
    """ "database" or "broker" when ``failure`` is theirs, not the event's: the database away, or a handler's publish
    (a dead letter it parks) the broker did not answer. A handler's own TimeoutError is the event's: retried a few
    times only."""
    if _handlers_own_timeout(failure):
        return None
    if database_is_unavailable(failure):
        return "database"
    if isinstance(failure, KafkaError) and broker_is_unavailable(failure):
        return "broker"
    return None


def _handlers_own_timeout(failure: Exception) -> bool:
    """A TimeoutError is an OSError, which ``database_is_unavailable`` takes as a connection that failed; raised on a
    connection still open (a failed one is closed, or its acquiring is ``DatabaseUnavailable``), it is a deadline
    of the handler's own: a dependency that did not answer in time."""
    return isinstance(failure, TimeoutError)


def _database_away(conn: asyncpg.Connection, failure: Exception) -> bool:
    """The transaction on ``conn`` failed for the database's sake, not the events'."""
    return conn.is_closed() or (not _handlers_own_timeout(failure) and database_is_unavailable(failure))


async def _raw_body(msg: KafkaMessage) -> Any:
    return msg.body


async def _parse_batch(
    records: tuple[Record, ...], parse: Callable[[tuple[Record, ...]], Awaitable[KafkaMessage]]
) -> KafkaMessage:
    """FastStream's message for a batch, with two changes. Its parser decodes every header as UTF-8 and fails, before
    our code runs, on one without a value or not UTF-8; the batch is then skipped silently. Hand it printable
    headers; ``on_batch`` reads the raw ones and dead-letters such a message. And its ack commits the batch's own
    partitions (``_BatchCommit``)."""
    printable = []
    for record in records:
        copied = copy.copy(record)
        copied.headers = [(k, v.encode()) for k, v in printable_headers(record.headers).items()]
        printable.append(copied)
    message = await parse(tuple(printable))
    message.raw_message = records
    message.consumer = _BatchCommit(message.consumer, records)
    return message


class _BatchCommit:
    """The consumer as FastStream acks a batch with: it commits the batch's own partitions. aiokafka's ``commit()``
    sends every assigned partition (54 for intake, over 100 for the notifier), each batch, to a broker that stores
    each one."""

    def __init__(self, consumer: Any, records: tuple[Record, ...]) -> None:
        self._consumer = consumer
        self._offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._offsets[tp] = max(self._offsets.get(tp, 0), record.offset + 1)

    async def commit(self) -> None:
        await self._consumer.commit(self._offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(partition, offset)


def _digest(record: Record, event: Event) -> bytes:
    """The message's digest, which the inbox keeps with its event id: a reused id is told from a redelivery by it."""
    return inbox.message_digest(event.source, record.key, record.value)


async def _finish(conn: asyncpg.Connection, unfinished: dict[Finish, list[Any]]) -> None:
    """What the handlers left to write, written: each ``finish`` once, with its handlers' results in order."""
    for finish, results in unfinished.items():
        await finish(conn, results)


@dataclass(frozen=True)
class _Registration:
    event_type: EventType
    handler: Handler
    finish: Finish | None = None
    prepare: Prepare | None = None


async def _prepare(
    conn: asyncpg.Connection, registrations: list[_Registration], events: list[Event]
) -> dict[Prepare, Any]:
    """Each ``prepare`` once, with the events (in order) about to be handled by the handlers it was registered with."""
    given: dict[Prepare, list[Event]] = {}
    for registration, event in zip(registrations, events, strict=True):
        if registration.prepare is not None:
            given.setdefault(registration.prepare, []).append(event)
    return {prepare: await prepare(conn, its_events) for prepare, its_events in given.items()}


# The record whose event a handler is handling (for a dead letter the handler itself parks).
_record_in_hand: ContextVar[Record | None] = ContextVar("record_in_hand", default=None)


@contextmanager
def _handling(record: Record, event: Event) -> Iterator[None]:
    """The span of handling one event: it continues the trace its ``ce_traceparent`` names (a malformed one starts a
    new trace), so the events the handler stages continue it too."""
    with tracing.span(
        f"handle {event.type.value}",
        traceparent=tracing.event_traceparent(record.headers),
        continues=True,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.destination.name": record.topic, "cloudevents.event_id": str(event.id)},
    ):
        in_hand = _record_in_hand.set(record)
        try:
            yield
        finally:
            _record_in_hand.reset(in_hand)


class EventConsumer:
    """One consumer group for one service; handlers are registered per event data type, exactly those its
    contract (``event_contract``) lists: ``subscribe`` refuses to start otherwise."""

    def __init__(
        self,
        name: str,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        settings: ServiceSettings,
        contract: ServiceContract | None = None,
    ) -> None:
        self.name = name
        self.contract = contract or contract_of(name)
        self._broker = broker
        self._pool = pool
        self._settings = settings
        self._handlers: dict[str, _Registration] = {}
        self._refusals: dict[str, tuple[str, ...]] = {}  # topic -> the codes its handler may park a message with
        self._subscriber: Any = None
        self._batch_started: float | None = None  # time.monotonic() when the batch in hand was given to us
        self._dead_letters = DeadLetterOffice(name, broker, pool, retry_max_seconds=settings.consumer_retry_max_seconds)

    @overload
    def handles(
        self, data_type: type[D], *, finish: Finish | None = None
    ) -> Callable[[Callable[[asyncpg.Connection, Event, D], Awaitable[Any]]], Handler]: ...

    @overload
    def handles(
        self,
        data_type: type[D],
        *,
        finish: Finish | None = None,
        prepare: Callable[[asyncpg.Connection, list[Event]], Awaitable[P]],
    ) -> Callable[[Callable[[asyncpg.Connection, Event, D, P], Awaitable[Any]]], Handler]: ...

    def handles(
        self, data_type: type[D], *, finish: Finish | None = None, prepare: Prepare | None = None
    ) -> Callable[[Handler], Handler]:
        """Register ``handler(conn, event, data)``; it runs inside the inbox transaction.

        With ``finish``, the handler returns what is left to write, and ``finish(conn, results)`` writes it once per
        transaction, after every handler ran, with the results in the order of the events (a write set-based for a
        whole batch, not one round trip per event). Should ``finish`` fail, each event is handled again alone.

        With ``prepare``, ``prepare(conn, events)`` runs once per transaction before any handler, with the events its
        handlers are about to handle (in order), and each handler gets what it returned as a fourth argument (a read
        or write set-based for the batch). Should it fail, each event is handled again alone."""

        def register(handler: Handler) -> Handler:
            topic = topic_for(data_type.event_type, self._settings.topic_prefix)
            self._handlers[topic] = _Registration(data_type.event_type, handler, finish, prepare)
            return handler

        return register

    def may_refuse(self, data_type: type[EventData], codes: Iterable[str]) -> None:
        """Say which codes the handler of ``data_type`` may refuse (``dead_letter``) its events with, so that their
        dead-letter counts are shown at 0 from the start, as every other reason's are."""
        self._refusals[topic_for(data_type.event_type, self._settings.topic_prefix)] = tuple(codes)

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    @property
    def group_id(self) -> str:
        """Prefixed like the topics: deployments sharing a cluster must not share (and rebalance) a group."""
        return f"{self._settings.topic_prefix}{self.name}"

    @property
    def kafka_consumer(self) -> AIOKafkaConsumer | None:
        """The client underneath, once subscribed and started (for the lag gauge)."""
        consumer: AIOKafkaConsumer | None = getattr(self._subscriber, "consumer", None)
        return consumer

    def subscribe(self) -> None:
        """Attach to the broker; call before the broker starts."""
        self.contract.check_consumes({registration.event_type for registration in self._handlers.values()})
        if not self._handlers:
            return
        for topic in self.topics:
            self._dead_letters.expect(topic, (*REASONS, *self._refusals.get(topic, ())))
        self._subscriber = self._broker.subscriber(
            *self.topics,
            group_id=self.group_id,
            partition_assignment_strategy=PARTITION_ASSIGNORS,  # a payment's events on all topics: one lane
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest",
            batch=True,
            max_records=self._settings.consumer_batch_max_records,
            batch_timeout_ms=self._settings.consumer_batch_timeout_ms,
            fetch_max_wait_ms=self._settings.consumer_fetch_max_wait_ms,
            session_timeout_ms=self._settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=self._settings.consumer_session_timeout_ms // 3,  # Kafka's advice: a third at most
            parser=_parse_batch,
            decoder=_raw_body,  # we decode (and dead-letter) ourselves; FastStream's JSON decoding would loop
        )
        self._subscriber(self.on_batch)
        read_around_undecodable_records(self._subscriber)

    @property
    def batch_age(self) -> float:
        """Seconds the batch in hand has been handled for; 0 when there is none."""
        started = self._batch_started
        return 0.0 if started is None else time.monotonic() - started

    async def on_batch(self, msg: KafkaMessage) -> None:
        """Handle one polled batch; FastStream commits the offsets when this returns."""
        self._batch_started = time.monotonic()
        try:
            await self._handle_batch(msg)
        finally:
            self._batch_started = None

    async def _handle_batch(self, msg: KafkaMessage) -> None:
        # One ordered lane per partition number, side by side, each in its own transactions: every partition's
        # records stay in one lane, in order, and a key lands at the same number on every topic (one partitioner,
        # one partition count), so no two lanes ever hold the same payment's (or merchant's) events, nor two
        # instances (the range assignor, in ``subscribe``).
        lanes: dict[int, list[tuple[Record, Event]]] = {}
        for record in msg.raw_message:
            event = await self._decode_or_give_up(record)
            if event is not None:
                lanes.setdefault(record.partition, []).append((record, event))
        await asyncio.gather(*(self._handle_in_order(lane) for lane in lanes.values()))

    async def _handle_in_order(self, events: list[tuple[Record, Event]]) -> None:
        """Handle ``events`` in order: together in one transaction when they can be, each failure retried alone."""
        start, end, attempt = 0, len(events), 0
        while start < len(events):
            try:
                failed = await self._handle_together(events[start:end])
            except DatabaseUnavailable as exc:  # nothing committed: the same again, once the database is back
                attempt += 1
                delay = self._backoff(attempt)
                log.warning("database_unavailable", attempt=attempt, retry_in=round(delay, 3), error=repr(exc))
                await asyncio.sleep(delay)
                continue
            except Exception:
                log.exception("batch_failed_handling_one_by_one")
                for record, event in events[start:]:
                    with bound(event):
                        await self._handle_with_retries(record, event)
                return
            attempt = 0
            if failed is None:  # all of them committed
                start, end = end, len(events)
            elif failed[0] > 0:  # rolled back: first the ones before the failing event, together
                end = start + failed[0]
            else:  # the first one failed: alone, as a batch of one would be (its try counts), then the rest
                record, event = events[start]
                with bound(event):
                    await self._handle_with_retries(record, event, failed[1])
                start, end = start + 1, len(events)

    async def _decode_or_give_up(self, record: Record) -> Event | None:
        try:
            return decode_event(
                read_headers(record.headers),
                record.value,
                expected_type=self._handlers[record.topic].event_type,
                max_bytes=self._settings.event_max_bytes,
            )
        except InvalidEvent as exc:
            await self._give_up(record, exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - whatever else reading it raised, it is this message's fault
            await self._give_up(record, "undecodable", type(exc).__name__)
        return None

    async def _handle_together(self, events: list[tuple[Record, Event]]) -> tuple[int, Exception] | None:
        """Handle ``events`` in one transaction: None when it committed; else it was rolled back, and this is where
        and how it failed (index, exception). Raises DatabaseUnavailable when the database is away."""
        conn = await self._connection()
        failed: tuple[int, Exception] | None = None
        duplicates: set[int] = set()
        reused: dict[int, str] = {}  # events whose id was handled as another event: why it is no redelivery
        try:
            async with counts_on_commit(), conn.transaction():
                digests = [_digest(record, event) for record, event in events]
                claims = await inbox.claim_many(conn, self.name, [event for _, event in events], digests)
                unclaimed = set(claims.fresh)
                handled = []  # the first of each fresh event (a batch may hold one twice)
                for index, (record, event) in enumerate(events):
                    if event.id in unclaimed and claims.is_claim_of(event, digests[index]):
                        unclaimed.remove(event.id)
                        handled.append((index, record, event))
                    elif (why := claims.reuse_of(event, digests[index])) is not None:
                        reused[index] = why  # dead-lettered once this commits
                    else:  # handled before (or earlier in this batch): skip it
                        duplicates.add(index)
                registrations = [self._handlers[record.topic] for _, record, _ in handled]
                # A failure in a prepare, as in a finish, is no one event's: all are handled again alone.
                prepared = await _prepare(conn, registrations, [event for _, _, event in handled])
                unfinished: dict[Finish, list[Any]] = {}
                for (index, record, event), registration in zip(handled, registrations, strict=True):
                    try:
                        with bound(event), _handling(record, event):
                            await self._run_handler(registration, conn, event, unfinished, prepared)
                    except Exception as exc:
                        failed = (index, exc)
                        raise _RollBack from exc
                await _finish(conn, unfinished)  # a failure here is no one event's: all are handled again alone
                crash_point(f"{self.name}.before_commit")
        except _RollBack:
            pass  # rolled back: the caller retries what came before the failure, then the failing one alone
        except Exception as exc:
            if _database_away(conn, exc):
                conn.terminate()  # never hand a connection the server may have killed back to the pool
                raise DatabaseUnavailable(repr(exc)) from exc
            raise
        finally:
            await self._pool.release(conn)
        if failed is None:
            for index, why in reused.items():
                record, event = events[index]
                with bound(event):
                    await self._give_up(record, "event_id_reused", why, event=event)
            outcomes: Counter[tuple[str, str]] = Counter()
            for index, (_, event) in enumerate(events):
                if index in reused:
                    continue  # counted as dead-lettered
                duplicate = index in duplicates
                outcomes[(event.type.value, "duplicate" if duplicate else "handled")] += 1
                with bound(event):
                    log.info("event_duplicate_skipped" if duplicate else "event_handled")
            for (event_type, outcome), count in outcomes.items():  # one count per type, not per event
                EVENTS_HANDLED.labels(self.name, event_type, outcome).inc(count)
        return failed

    async def _run_handler(
        self,
        registration: _Registration,
        conn: asyncpg.Connection,
        event: Event,
        unfinished: dict[Finish, list[Any]],
        prepared: dict[Prepare, Any],
    ) -> None:
        """The handler, timed; a try that raised is counted as failed. What is left for its ``finish`` to write
        goes to ``unfinished``."""
        handler, finish, prepare = registration.handler, registration.finish, registration.prepare
        started = time.perf_counter()
        try:
            if prepare is None:
                result = await handler(conn, event, event.data)
            else:
                result = await handler(conn, event, event.data, prepared[prepare])
            if finish is not None:
                unfinished.setdefault(finish, []).append(result)
        except Exception:
            EVENTS_HANDLED.labels(self.name, event.type.value, "failed").inc()
            raise
        finally:
            HANDLER_SECONDS.labels(self.name, event.type.value).observe(time.perf_counter() - started)

    async def _connection(self) -> asyncpg.Connection:
        try:
            return await self._pool.acquire()
        except Exception as exc:
            raise DatabaseUnavailable(repr(exc)) from exc

    async def _handle_with_retries(self, record: Record, event: Event, failure: Exception | None = None) -> None:
        """Handle one event alone until it is handled or dead-lettered; ``failure``: how its first try failed."""
        attempt = transient_failures = 0
        while True:
            attempt += 1
            if failure is None:
                try:
                    await self._handle_once(record, event)
                    return
                except Exception as exc:  # noqa: BLE001 - every failure is sorted below: wait, retry or dead-letter
                    failure = exc
            if (away := infrastructure_away(failure)) is not None:
                # No event could be handled meanwhile: wait for the database (or the broker a handler published
                # to), never dead-letter for it, and spend none of the event's own retries on it.
                delay = self._backoff(attempt)
                log.warning(f"{away}_unavailable", attempt=attempt, retry_in=round(delay, 3), error=repr(failure))
            elif isinstance(failure, _RETRYABLE) and transient_failures + 1 < self._settings.consumer_retry_attempts:
                transient_failures += 1
                delay = self._backoff(transient_failures)
                log.warning("event_retrying", attempt=attempt, retry_in=round(delay, 3), error=repr(failure))
            else:
                code = "retries_exhausted" if isinstance(failure, _RETRYABLE) else "handler_error"
                await self._give_up(record, code, describe_failure(failure), event=event, exc=failure)
                return
            failure = None
            await asyncio.sleep(delay)

    async def _handle_once(self, record: Record, event: Event) -> None:
        conn = await self._connection()
        try:
            async with counts_on_commit(), conn.transaction():
                digest = _digest(record, event)
                claims = await inbox.claim_many(conn, self.name, [event], [digest])
                fresh, reuse = event.id in claims.fresh, claims.reuse_of(event, digest)
                if fresh:
                    registration = self._handlers[record.topic]
                    unfinished: dict[Finish, list[Any]] = {}
                    with _handling(record, event):
                        prepared = await _prepare(conn, [registration], [event])
                        await self._run_handler(registration, conn, event, unfinished, prepared)
                        await _finish(conn, unfinished)
                    crash_point(f"{self.name}.before_commit")
        except Exception as exc:
            if _database_away(conn, exc):
                conn.terminate()  # never hand a connection the server may have killed back to the pool
                raise DatabaseUnavailable(repr(exc)) from exc
            raise
        finally:
            await self._pool.release(conn)
        if reuse is not None:
            await self._give_up(record, "event_id_reused", reuse, event=event)
        elif not fresh:
            log.info("event_duplicate_skipped")
            EVENTS_HANDLED.labels(self.name, event.type.value, "duplicate").inc()
        else:
            log.info("event_handled")
            EVENTS_HANDLED.labels(self.name, event.type.value, "handled").inc()

    def _backoff(self, attempt: int) -> float:
        settings = self._settings
        return jittered(
            exponential(attempt, base=settings.consumer_retry_base_seconds, cap=settings.consumer_retry_max_seconds)
        )

    async def _give_up(
        self, record: Record, code: str, error: str, *, event: Event | None = None, exc: Exception | None = None
    ) -> None:
        """Park the message on its dead-letter topic and move on; alert the team if a refund is left unfinished."""
        EVENTS_HANDLED.labels(self.name, self._handlers[record.topic].event_type.value, "dead_lettered").inc()
        log.error(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=code,
            error=error,
            # A validation error's traceback quotes the input (a customer's data): ``error`` says where and why.
            exc_info=exc if code == "handler_error" and not isinstance(exc, ValidationError) else None,
            trace_id=tracing.trace_id_of(tracing.event_traceparent(record.headers)),  # the trace it was part of
        )
        await self._dead_letters.publish_until_taken(
            record.topic,
            record.key,
            record.value or b"",
            printable_headers(record.headers),
            code,
            error,
            position={"dlq_original_partition": str(record.partition), "dlq_original_offset": str(record.offset)},
        )
        if event is not None and needs_a_person(event):
            try:
                await self._dead_letters.alert_team(event, record.topic, code)
            except Exception:  # the dead letter is parked and logged; a bug in the alert must not stop consumption
                log.exception("dead_letter_alert_failed", topic=record.topic)

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
        """Park a message on ``<topic>.dlq`` with why it failed; raising here leaves the offset uncommitted. Parked
        by a handler, a replayed record's marker goes with it, as in the dead letter ``_give_up`` makes of the record:
        a replay that fails again says so."""
        if topic not in self._handlers:  # a consumer publishes the dead-letter topics of what it consumes only
            raise ContractBroken(f"{self.name} does not consume {topic}: it cannot dead-letter its messages")
        record = _record_in_hand.get()
        if record is not None and record.topic == topic:
            replayed_from = printable_headers(record.headers).get(REPLAY_HEADER)
            headers = headers if replayed_from is None else {**headers, REPLAY_HEADER: replayed_from}
        await self._dead_letters.publish(topic, key, value, headers, code, error, position=position)
