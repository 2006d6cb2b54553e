"""What the broker knows: topics and their partitions, offsets, consumer groups and what they committed.

Tansu (the local broker) answers some admin calls partially; each fallback is named where it is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str  # Stable, Empty, Dead, PreparingRebalance, ... as the broker says
    members: int

    @property
    def has_members(self) -> bool:
        return self.members > 0


async def existing_partitions(reader: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each topic that exists, by topic; missing topics are left out."""
    present = await reader.topics()
    layout: dict[str, list[int]] = {}
    for topic in topics:
        if topic in present:
            layout[topic] = sorted(reader.partitions_for_topic(topic) or ())
    return layout


def partitions_of(layout: dict[str, list[int]]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for topic, parts in layout.items() for p in parts]


async def offset_range(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(beginning, end) offsets of each partition."""
    if not partitions:
        return {}, {}
    return await reader.beginning_offsets(partitions), await reader.end_offsets(partitions)


async def offsets_at(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition], moment: datetime, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The first offset of each partition at or after ``moment``; the end when nothing is that recent.

    Tansu answers "nothing that recent" with offset 0 and timestamp -1 instead of no offset: read as the end too.
    """
    found = await reader.offsets_for_times({tp: int(moment.timestamp() * 1000) for tp in partitions})
    result: dict[TopicPartition, int] = {}
    for tp in partitions:
        answer = found.get(tp)
        result[tp] = ends[tp] if answer is None or answer.timestamp < 0 else answer.offset
    return result


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """What ``group`` committed for each partition; None where it committed nothing.

    The partitions are always named: asked for "all of the group's partitions", Tansu sends an answer aiokafka
    cannot read. (Kafka answers -1 for a partition without a committed offset; Tansu answers 0.)
    """
    if not partitions:
        return {}
    answer = await admin.list_consumer_group_offsets(group, partitions=partitions)
    result: dict[TopicPartition, int | None] = {}
    for tp in partitions:
        entry = answer.get(tp)
        result[tp] = entry.offset if entry is not None and entry.offset >= 0 else None
    return result


async def consumer_groups(admin: AIOKafkaAdminClient) -> list[str]:
    return sorted(str(entry[0]) for entry in await admin.list_consumer_groups())


async def describe_group(admin: AIOKafkaAdminClient, group: str) -> GroupState:
    """The group's state and how many members the broker lists.

    Tansu keeps listing a member that left (state Stable) until another member joins: a listed member may be
    gone. ``consumer_rewind`` tells the two apart by joining the group itself.
    """
    [response] = await admin.describe_consumer_groups([group])
    for entry in response.groups:
        _error, group_id, state, _protocol_type, _protocol, members = entry[:6]
        if group_id == group:
            return GroupState(group, str(state or "Dead"), len(members or ()))
    return GroupState(group, "Dead", 0)


def lag(committed: int | None, beginning: int, end: int) -> int:
    """Records the group has yet to read; without a committed offset it starts at the oldest record."""
    return max(end - (beginning if committed is None else max(committed, beginning)), 0)
