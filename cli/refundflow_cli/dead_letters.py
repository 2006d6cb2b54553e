"""Dead-lettered records: reading them back, telling which are the same message, and whether one can be replayed.

The consumer parks a record on ``<topic>.dlq`` with the original key, value and headers plus ``dlq_*`` headers
(reason, error, consumer, original topic/partition/offset, failed at). A replay publishes the original again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer

from refundflow_cli.broker_offsets import existing_partitions, offset_range, partitions_of
from refundflow_cli.records import DLQ_HEADER_PREFIX, Record, record_time
from refundflow_shared.dead_letters import REASONS as FAILURE_REASONS
from refundflow_shared.dead_letters import REPLAY_HEADER
from refundflow_shared.event_decoding import printable_headers
from refundflow_shared.settings import ServiceSettings


@dataclass(frozen=True)
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def position(self) -> tuple[str, int, int]:
        return self.dlq_topic, self.partition, self.offset

    @property
    def label(self) -> str:
        return f"{self.dlq_topic}/{self.partition}/{self.offset}"

    def dlq(self, name: str) -> str | None:
        return self.headers.get(f"{DLQ_HEADER_PREFIX}{name}")

    @property
    def event_id(self) -> str | None:
        """The CloudEvents id, when the record has a readable one."""
        try:
            return str(uuid.UUID(self.headers["ce_id"]))
        except (KeyError, ValueError):
            return None

    @property
    def original_topic(self) -> str | None:
        return self.dlq("original_topic")

    @property
    def original_partition(self) -> int | None:
        return _integer(self.dlq("original_partition"))

    @property
    def original_offset(self) -> int | None:
        return _integer(self.dlq("original_offset"))

    @property
    def failed_at(self) -> datetime:
        try:
            return datetime.fromisoformat(self.dlq("failed_at") or "")
        except ValueError:
            return self.timestamp

    @property
    def event_time(self) -> datetime | None:
        """When the event happened (``ce_time``), when the record has a readable one with its offset."""
        try:
            moment = datetime.fromisoformat(self.headers["ce_time"])
        except (KeyError, ValueError):
            return None
        return moment if moment.tzinfo is not None else None

    @property
    def message(self) -> str:
        """What makes two dead letters the same message: its event id, else its original position."""
        if self.event_id is not None:
            return f"event:{self.event_id}"
        if self.original_partition is not None and self.original_offset is not None:
            return f"at:{self.original_topic}/{self.original_partition}/{self.original_offset}"
        return f"dlq:{self.label}"

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original headers (the ``dlq_*`` ones removed) and where the replay came from."""
        kept = [(k, v.encode()) for k, v in self.headers.items() if not k.startswith(DLQ_HEADER_PREFIX)]
        return [*(h for h in kept if h[0] != REPLAY_HEADER), (REPLAY_HEADER, self.label.encode())]

    def summary(self) -> dict[str, object]:
        return {
            "dlq_topic": self.dlq_topic,
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.event_id,
            "event_type": self.headers.get("ce_type"),
            "key": (self.key or b"").decode("utf-8", errors="replace"),
            "reason": self.dlq("reason"),
            "error": self.dlq("error"),
            "consumer": self.dlq("consumer"),
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "failed_at": self.failed_at,
            "dropped": self.dlq("dropped"),
            "replay_of": self.headers.get(REPLAY_HEADER),
        }


def from_record(record: Record) -> DeadLetter:
    return DeadLetter(
        dlq_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record_time(record),
        key=record.key,
        value=record.value or b"",
        headers=printable_headers(record.headers),
    )


async def read_dead_letters(reader: AIOKafkaConsumer, topics: list[str]) -> list[DeadLetter]:
    """Every record on the given dead-letter topics (those that exist), oldest first per partition."""
    layout = await existing_partitions(reader, topics)
    partitions = partitions_of(layout)
    if not partitions:
        return []
    beginnings, ends = await offset_range(reader, partitions)
    reader.assign(partitions)
    for tp in partitions:
        reader.seek(tp, beginnings[tp])
    letters: list[DeadLetter] = []
    pending = {tp for tp in partitions if beginnings[tp] < ends[tp]}
    while pending:
        for tp, records in (await reader.getmany(*pending, timeout_ms=1000)).items():
            letters.extend(from_record(r) for r in records if r.offset < ends[tp])
        pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
    letters.sort(key=lambda letter: (letter.timestamp, letter.position))
    return letters


# Spare time between the replay's last reading and the inboxes forgetting the original: pruning runs late, clocks
# differ, a record's time is its producer's.
REPLAY_MARGIN = timedelta(days=1)


def replay_window(settings: ServiceSettings) -> timedelta:
    """How old an event may be and still be replayed: the replay is a new record on its topic, read for
    TOPIC_RETENTION_DAYS more (by a consumer lagging, stopped or rewound), and the inboxes must still remember the
    original until then, INBOX_RETENTION_DAYS from it; less a margin."""
    window = timedelta(days=settings.inbox_retention_days - settings.topic_retention_days) - REPLAY_MARGIN
    return max(window, timedelta(0))


def replay_problem(letter: DeadLetter, original_topic: str, *, now: datetime, window: timedelta) -> str | None:
    """Why this dead letter must not be replayed, or None when it can be (``window``: ``replay_window``)."""
    if letter.dlq("dropped"):
        return f"nothing to replay: {letter.dlq('dropped')} was dropped when it was dead-lettered"
    if letter.original_topic not in (None, original_topic):
        return f"it names another original topic ({letter.original_topic}), not {original_topic}"
    if (reason := letter.dlq("reason")) is not None and reason not in FAILURE_REASONS:
        # Not a failure but a refusal its consumer answered (a refund.submit's refund.submit_rejected): final, and
        # recorded as handled, so a replay would be skipped. Its sender decides whether to send it again.
        return f"refused ({reason}) and answered to its sender, who sends it again once the cause is fixed"
    # Measured from the event itself too: a replay that fails again is dead-lettered again, dated anew.
    oldest = min(t for t in (letter.failed_at, letter.timestamp, letter.event_time) if t is not None)
    if now - oldest > window:
        # A consumer that handled it may forget it while the replay can still be read: it could repeat its effect.
        return (
            f"older than {_days(window)} (INBOX_RETENTION_DAYS less TOPIC_RETENTION_DAYS and a day): a consumer that"
            " handled it could handle the replay again once its inbox forgot it"
        )
    return None


def group_by_message(letters: list[DeadLetter]) -> list[list[DeadLetter]]:
    """Dead letters of one message together, in order of the first one."""
    groups: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault(letter.message, []).append(letter)
    return list(groups.values())


def _days(length: timedelta) -> str:
    days = length / timedelta(days=1)
    return f"{days:g} day{'' if days == 1 else 's'}"


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
