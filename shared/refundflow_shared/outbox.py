"""Transactional outbox: write events with the state change; a relay publishes them after commit.

No row can stop the relay. Each row is published on its own: the acknowledged ones are marked sent even when
others fail, and a row the broker refuses (too large, say) is retried a few times, then parked with its error and
a team alert, while every other row, of its key too, keeps flowing. A broker that does not answer is waited for
instead: that is no row's fault.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import asyncpg
import structlog
from pydantic import ValidationError

from refundflow_shared.crash_points import crash_point
from refundflow_shared.event_contract import check_publishes
from refundflow_shared.event_decoding import DEFAULT_MAX_EVENT_BYTES, event_size
from refundflow_shared.events import Event, EventData, EventType, TeamAlertRaised, erased_payload, topic_for
from refundflow_shared.tracing import EVENT_HEADER, current_traceparent
from refundflow_shared.transient_faults import broker_is_unavailable
from refundflow_shared.wakeup_loop import run_on_notify

log = structlog.get_logger(__name__)

_LONGEST_SEQUENCE = 2**63 - 1
_max_event_bytes = DEFAULT_MAX_EVENT_BYTES


class EventTooLarge(ValueError):
    """The event would be over the broker's limit: refuse the change that causes it, before anything is written."""

    code = "event_too_large"

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(f"a {event_type} event of {size} bytes is over the {limit} bytes an event may have")
        self.message = str(self)


def limit_event_size(max_bytes: int) -> None:
    """Set the largest event ``add_event`` accepts in this process (the runtime does, from EVENT_MAX_BYTES)."""
    global _max_event_bytes  # one broker limit per process, like the logging setup
    _max_event_bytes = max_bytes


async def erase_customer_from_events(conn: asyncpg.Connection, payment_ids: Sequence[str]) -> int:
    """Overwrite the customer's personal data (``events.erased_payload``) in every outbox row of these payments,
    sent, unsent or parked: an unsent one then publishes without it, and none keeps it. Returns the rows changed."""
    rows = await conn.fetch(
        "SELECT id, payload FROM outbox WHERE partition_key = ANY($1::text[]) FOR UPDATE", list(payment_ids)
    )
    changed = []
    for row in rows:
        payload = json.loads(row["payload"])
        if isinstance(payload, dict) and (erased := erased_payload(payload)) != payload:
            changed.append((row["id"], json.dumps(erased, separators=(",", ":")).encode()))
    await conn.executemany("UPDATE outbox SET payload = $2 WHERE id = $1", changed)
    return len(changed)


async def add_event(conn: asyncpg.Connection, data: EventData, *, source: str) -> Event:
    """Stage ``data`` as an event in the caller's transaction; it is published only if that commits."""
    (event,) = await add_events(conn, [data], source=source)
    return event


async def add_events(conn: asyncpg.Connection, events: Sequence[EventData], *, source: str) -> list[Event]:
    """Stage ``events`` in the caller's transaction: one round trip per key, each key's events in their order."""
    drafts = _drafts(events, source)  # all refused before any is staged
    by_key: dict[str, list[_Draft]] = {}
    for draft in drafts:
        by_key.setdefault(draft.event.partition_key, []).append(draft)
    assert conn.is_in_transaction(), "outbox rows must be written in the state change's transaction"
    sequences: dict[uuid.UUID, int] = {}
    for key in sorted(by_key):  # in one order, as a transaction's row locks should be taken
        staging, args = _staging(by_key[key], first=1)
        rows = await conn.fetch(f"WITH {staging} SELECT event_id, sequence FROM staged_events", *args)
        sequences |= {row["event_id"]: row["sequence"] for row in rows}
    return [draft.event.model_copy(update={"sequence": sequences[draft.event.id]}) for draft in drafts]


def events_insert(
    events: Sequence[EventData], *, source: str, first: int, only_if: str | None = None
) -> tuple[str, list[Any]]:
    """What stages ``events``, all of one key, in the outbox, with the key's next sequence numbers: two
    ``name AS (...)`` for the WITH of the statement of the change that causes them (``only_if``: a condition on its
    other parts), and their arguments, numbered from ``$first``. They are published only if that statement's
    transaction commits.

    Raises ``EventTooLarge`` (before anything is written) when an event could never be published, and
    ``ContractBroken`` when ``source``'s contract does not list an event's type (a programming error).
    """
    return _staging(_drafts(events, source), first=first, only_if=only_if)


class _Draft(NamedTuple):
    """An event as it is staged: its number not yet known, its headers (JSON) and its value."""

    event: Event
    headers: str
    value: bytes


def _drafts(events: Sequence[EventData], source: str) -> list[_Draft]:
    """Each event with its headers and value, as they are staged; refused (``EventTooLarge``, ``ContractBroken``)
    before anything is written."""
    drafts = []
    for data in events:
        check_publishes(source, data.event_type)
        # Weighed with the longest sequence number, so nothing is written (no gap in the sequence) when refused.
        draft = Event.wrap(data, source=source, sequence=_LONGEST_SEQUENCE)
        value, headers = draft.kafka_value(), draft.kafka_headers()
        if (traceparent := current_traceparent()) is not None:  # the event continues the trace it was caused in
            headers[EVENT_HEADER] = traceparent
        if (size := event_size(headers, value)) > _max_event_bytes:
            raise EventTooLarge(data.event_type.value, size, _max_event_bytes)
        drafts.append(_Draft(draft, json.dumps(headers), value))
    return drafts


def _staging(drafts: Sequence[_Draft], *, first: int, only_if: str | None = None) -> tuple[str, list[Any]]:
    # One key: its row in event_sequences moves once, by the number of events, and the events take the numbers up
    # to its new value in their order (a statement may change a row only once). Rows from VALUES: a set-based form
    # for several keys (unnest, a count per key, window functions) cost PostgreSQL about 0.15 ms more per event
    # than this one (README, Performance).
    keys = {draft.event.partition_key for draft in drafts}
    assert len(keys) == 1, f"one statement stages the events of one key, not of {len(keys)}"
    (key,) = keys
    count, where = len(drafts), f" WHERE {only_if}" if only_if else ""
    rows: list[str] = []
    args: list[Any] = [key]
    for n, draft in enumerate(drafts, start=1):
        p = first + len(args)
        rows.append(f"(${p}::uuid, ${p + 1}::text, ${p + 2}::text, ${p + 3}::bytea, {n})")
        args += [draft.event.id, draft.event.type.value, draft.headers, draft.value]
    staging = f"""
event_keys AS (
    INSERT INTO event_sequences (partition_key, last_sequence) SELECT ${first}::text, {count}{where}
    ON CONFLICT (partition_key) DO UPDATE SET last_sequence = event_sequences.last_sequence + EXCLUDED.last_sequence
    RETURNING last_sequence
),
staged_events AS (
    INSERT INTO outbox (event_id, event_type, partition_key, headers, payload)
    SELECT e.id, e.type, ${first},
        jsonb_set(e.headers::jsonb, '{{ce_sequence}}', to_jsonb((last_sequence - {count} + e.n)::text)), e.payload
    FROM (VALUES {", ".join(rows)}) AS e(id, type, headers, payload, n), event_keys
    ORDER BY e.n
    RETURNING event_id, (headers ->> 'ce_sequence')::bigint AS sequence
)"""
    return staging, args


async def retry_parked(conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]) -> int:
    """For an operator: put parked events back in line (after fixing what made the broker refuse them)."""
    status = await conn.execute(
        "UPDATE outbox SET parked_at = NULL, attempts = 0 WHERE event_id = ANY($1::uuid[]) AND parked_at IS NOT NULL",
        list(event_ids),
    )
    return int(status.split()[-1])


class Publisher(Protocol):
    """What the relay needs of a broker: send and hand back the delivery future (FastStream's KafkaBroker)."""

    async def publish(
        self, message: Any, topic: str, *, key: bytes, headers: dict[str, str], no_confirm: bool
    ) -> Any: ...


# Take the oldest unsent rows no other relay holds, but never a row whose key has an older unsent row held by
# another relay: that keeps each key's events in order with several relays running. Parked rows hold up nothing.
# (The row comparison makes the check an index range scan on outbox_unsent_by_key, even without statistics.)
_CLAIM_BATCH = """
WITH batch AS (
    SELECT id FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
SELECT o.id, o.event_id, o.event_type, o.partition_key, o.headers, o.payload, o.attempts
FROM outbox o JOIN batch b ON b.id = o.id
WHERE NOT EXISTS (
    SELECT 1 FROM outbox earlier
    WHERE earlier.partition_key = o.partition_key AND (earlier.partition_key, earlier.id) < (o.partition_key, o.id)
      AND earlier.sent_at IS NULL AND earlier.parked_at IS NULL AND earlier.id NOT IN (SELECT id FROM batch)
)
ORDER BY o.id
"""


class OutboxRelay:
    """Publishes committed outbox rows in batches and marks them sent once the broker acknowledged them.

    A crash between the broker's acknowledgement and the mark publishes the rows again: delivery is
    at-least-once, and consumers' inboxes make the effect happen once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        schema: str,
        topic_prefix: str = "",
        batch_size: int = 500,
        poll_interval: float = 1.0,
        park_after_attempts: int = 5,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._channel = f"{schema}_outbox"
        self._source = f"refundflow/{schema}"
        self._prefix = topic_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._park_after = park_after_attempts

    async def relay_batch(self) -> int:
        """Publish one batch; returns how many rows it marked sent.

        Raises the broker's error (after marking what was acknowledged) when the broker did not answer.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_BATCH, self._batch_size)
            if not rows:
                return 0
            sent, refused, unavailable = await self._publish_in_key_order(rows)
            crash_point("outbox.after_publish")
            if sent:
                await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", sent)
            for row, error in refused:
                await self._record_refusal(conn, row, error)
        log.debug("outbox_relayed", count=len(sent), refused=len(refused))
        if unavailable is not None:
            raise unavailable
        return len(sent)

    async def _publish_in_key_order(
        self, rows: list[asyncpg.Record]
    ) -> tuple[list[int], list[tuple[asyncpg.Record, BaseException]], BaseException | None]:
        """Publish in waves, the next row of each key per wave: a key's row goes out only once the one before it
        was acknowledged, so no row ever overtakes an earlier one of its key that failed."""
        queues: dict[str, deque[asyncpg.Record]] = {}
        for row in rows:
            queues.setdefault(row["partition_key"], deque()).append(row)
        sent: list[int] = []
        refused: list[tuple[asyncpg.Record, BaseException]] = []
        while queues:
            wave = [queue.popleft() for queue in queues.values()]
            unavailable: BaseException | None = None
            for row, error in zip(wave, await self._publish_wave(wave), strict=True):
                if error is None:
                    sent.append(row["id"])
                    continue
                queues.pop(row["partition_key"])  # the rest of this key waits for the next batch
                if broker_is_unavailable(error):
                    unavailable = error
                else:
                    refused.append((row, error))
            if unavailable is not None:
                return sent, refused, unavailable
            queues = {key: queue for key, queue in queues.items() if queue}
        return sent, refused, None

    async def _publish_wave(self, wave: list[asyncpg.Record]) -> list[BaseException | None]:
        """Send every row of the wave (pipelined), then wait for each acknowledgement; the error of each row."""
        futures: list[Any] = []
        for row in wave:
            try:
                futures.append(
                    await self._publisher.publish(
                        bytes(row["payload"]),
                        topic_for(row["event_type"], self._prefix),
                        key=row["partition_key"].encode(),
                        headers=json.loads(row["headers"]),
                        no_confirm=True,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - refused before sending (too large, say): this row's fault
                futures.append(exc)
        errors: list[BaseException | None] = []
        for future in futures:
            if isinstance(future, BaseException):
                errors.append(future)
                continue
            try:
                await future
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - sorted by the caller: the broker's fault or the row's
                errors.append(exc)
        return errors

    async def _record_refusal(self, conn: asyncpg.Connection, row: asyncpg.Record, exc: BaseException) -> None:
        attempts = row["attempts"] + 1
        error = f"{type(exc).__name__}: {exc}"[:2000]
        park = attempts >= self._park_after
        await conn.execute(
            "UPDATE outbox SET attempts = $2, last_error = $3, parked_at = CASE WHEN $4 THEN now() END WHERE id = $1",
            row["id"],
            attempts,
            error,
            park,
        )
        ids = {"event_id": str(row["event_id"]), "event_type": row["event_type"], "partition_key": row["partition_key"]}
        if not park:
            log.warning("outbox_publish_refused", attempts=attempts, error=error, **ids)
            return
        log.error("outbox_event_parked", attempts=attempts, error=error, **ids)
        alert = _parked_alert(row, error)
        if alert is not None:
            await add_event(conn, alert, source=self._source)

    async def run(self) -> None:
        """Relay until cancelled: woken by NOTIFY on commit, polling as a fallback."""
        await run_on_notify(
            self._pool, self._channel, self._relay_more, poll_interval=self._poll_interval, name="outbox_relay"
        )

    async def _relay_more(self) -> bool:
        return await self.relay_batch() == self._batch_size


def _parked_alert(row: asyncpg.Record, error: str) -> TeamAlertRaised | None:
    """The team alert for a parked row, when its payload names the merchant (never for a parked alert: no loop)."""
    if row["event_type"] == EventType.TEAM_ALERT_RAISED.value:
        return None
    try:
        payload = json.loads(bytes(row["payload"]))
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    try:
        return TeamAlertRaised(
            merchant_id=payload.get("merchant_id"),
            kind="event_parked",
            title="An event could not be published and is parked until an operator retries it",
            details={"event_type": row["event_type"], "event_id": str(row["event_id"]), "error": error},
            payment_id=payload.get("payment_id"),
            refund_id=payload.get("refund_id"),
        )
    except ValidationError:
        return None  # no merchant to tell (or ids we cannot trust): the error log is all there is
