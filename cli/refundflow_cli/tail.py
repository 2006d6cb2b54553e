"""`refundflow tail TOPIC`: a topic's records, decoded as CloudEvents, one line each."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from refundflow_cli.broker_offsets import existing_partitions, offset_range, partitions_of
from refundflow_cli.connections import kafka_reader
from refundflow_cli.outcomes import ExitCode, NotFound
from refundflow_cli.output import Output
from refundflow_cli.records import Record, describe, one_line
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import full_topic, short_name


async def tail_topic(
    settings: CliSettings,
    out: Output,
    *,
    topic: str,
    key: str | None,
    from_beginning: bool,
    follow: bool,
    lines: int,
) -> ExitCode:
    name = full_topic(topic, settings.topic_prefix)
    wanted = key.encode() if key is not None else None

    def matches(record: Record) -> bool:
        return wanted is None or record.key == wanted

    def show(records: list[Record]) -> None:
        for record in records:
            found = describe(record, short_name(record.topic, settings.topic_prefix))
            if out.json_mode:
                out.json_line(found)
            else:
                out.line(one_line(found))

    async with kafka_reader(settings) as reader:
        layout = await existing_partitions(reader, [name])
        if not layout:
            raise NotFound(f"topic {name} does not exist on the broker (no service has created it yet)")
        partitions = partitions_of(layout)
        beginnings, ends = await offset_range(reader, partitions)
        reader.assign(partitions)
        for tp in partitions:
            # The last records of a key may be anywhere: read its partitions from the start, keeping the last few.
            recent_only = not from_beginning and wanted is None
            reader.seek(tp, max(beginnings[tp], ends[tp] - lines) if recent_only else beginnings[tp])

        if from_beginning:
            await _read_to(reader, ends, lambda records: show([r for r in records if matches(r)]))
        else:
            last: dict[int, deque[Record]] = {tp.partition: deque(maxlen=lines) for tp in partitions}

            def keep(records: list[Record]) -> None:
                for record in filter(matches, records):
                    last[record.partition].append(record)

            await _read_to(reader, ends, keep)
            merged = sorted((r for kept in last.values() for r in kept), key=lambda r: (r.timestamp, r.partition))
            show(merged[-lines:] if lines else [])
        for tp in partitions:
            reader.seek(tp, ends[tp])  # what was fetched past the ends is shown by --follow, not skipped
        while follow:
            for records in (await reader.getmany(timeout_ms=1000)).values():
                show([r for r in records if matches(r)])
    return ExitCode.OK


async def _read_to(
    reader: AIOKafkaConsumer, ends: dict[TopicPartition, int], take: Callable[[list[Record]], object]
) -> None:
    """Read every assigned partition up to the end offsets taken when the command started."""
    pending = {tp for tp in ends if await reader.position(tp) < ends[tp]}
    while pending:
        batch = await reader.getmany(*pending, timeout_ms=1000)
        for tp, records in batch.items():
            take([r for r in records if r.offset < ends[tp]])
        pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
