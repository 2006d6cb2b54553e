"""`refundflow consumer rewind GROUP --to TIME|OFFSET`: make a stopped consumer group read again from the past.

The group's handlers skip what their inbox already holds, so re-reading repeats no effect; what the inbox lacks
(its effects lost with a restored database, say) is handled again. A rewind never moves a group forward (that
would skip records), and never touches a group with a live member.

Knowing the group is stopped: a group the broker lists without members is stopped (Kafka drops a member that
leaves, or that stops heartbeating), and its offsets are committed from outside. A group with listed members is
refused, unless the operator confirms every instance is stopped (``--confirm-stopped``): Tansu keeps listing a
member that left until another member joins. Then the command joins the group itself, which makes the broker drop
members that no longer heartbeat; given every partition it is alone and commits as the group's member, given fewer
another member is alive and it leaves, changing nothing. (It does not join a group to find out whether it is alive:
on Tansu, a member joining and leaving a live group leaves the live member without the partitions it gave up.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from refundflow_cli.broker_offsets import (
    GroupState,
    committed_offsets,
    consumer_groups,
    describe_group,
    existing_partitions,
    offset_range,
    offsets_at,
    partitions_of,
)
from refundflow_cli.connections import CLIENT_ID, kafka_admin, kafka_reader
from refundflow_cli.durations import parse_time
from refundflow_cli.outcomes import ExitCode, NotFound, Refused, UsageProblem
from refundflow_cli.output import Output
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import CONSUMES, full_topic, resolve_group, service_of, short_name
from refundflow_shared.events import topic_for
from refundflow_shared.kafka_topics import PARTITION_ASSIGNORS, all_topics

_RECORD_TIMES_START = datetime(1970, 1, 1, tzinfo=UTC)  # Kafka's timestamps count milliseconds from then


@dataclass(frozen=True)
class Target:
    """Where to rewind to: an offset in every partition, the oldest record, or the first record at a time."""

    offset: int | None = None
    moment: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        if text.strip().lower() in {"earliest", "beginning", "start"}:
            return cls(offset=0)
        if text.strip().isdigit():
            return cls(offset=int(text.strip()))
        moment = parse_time(text)
        if moment < _RECORD_TIMES_START:
            raise UsageProblem(f"{text!r} is before 1970, when record times start: 'earliest' is the oldest record")
        return cls(moment=moment)


@dataclass(frozen=True)
class Move:
    topic: str
    partition: int
    committed: int | None
    target: int

    @property
    def new(self) -> int | None:
        """Never forward; a partition the group never committed already starts at its oldest record."""
        return None if self.committed is None else min(self.committed, self.target)

    @property
    def rereads(self) -> int:
        return 0 if self.committed is None or self.new is None else self.committed - self.new


def plan(
    committed: dict[TopicPartition, int | None],
    beginnings: dict[TopicPartition, int],
    targets: dict[TopicPartition, int],
) -> list[Move]:
    """One move per partition: to the target, clamped to what the partition still holds."""
    return [
        Move(tp.topic, tp.partition, committed[tp], max(targets[tp], beginnings[tp]))
        for tp in sorted(committed, key=lambda tp: (tp.topic, tp.partition))
    ]


async def rewind(
    settings: CliSettings,
    out: Output,
    *,
    group_name: str,
    to: str,
    topics: list[str],
    dry_run: bool,
    confirm_stopped: bool,
) -> ExitCode:
    prefix = settings.topic_prefix
    target = Target.parse(to)
    group = resolve_group(group_name, prefix)
    async with kafka_admin(settings) as admin, kafka_reader(settings) as reader:
        if group not in await consumer_groups(admin):
            raise NotFound(f"no consumer group {group} on the broker")
        layout = await existing_partitions(reader, _candidate_topics(group, prefix, topics))
        partitions = partitions_of(layout)
        if not partitions:
            raise NotFound(f"none of the topics {group} reads exists on the broker")
        beginnings, ends = await offset_range(reader, partitions)
        committed = await committed_offsets(admin, group, partitions)
        if target.moment is not None:
            targets = await offsets_at(reader, partitions, target.moment, ends)
        else:
            targets = dict.fromkeys(partitions, target.offset or 0)
        moves = [m for m in plan(committed, beginnings, targets) if m.rereads > 0]
        state = await describe_group(admin, group)
        if moves and not dry_run:
            offsets = {TopicPartition(m.topic, m.partition): m.new for m in moves}
            if not state.has_members:
                await _commit_from_outside(settings, group, offsets)
            elif confirm_stopped:
                await _commit_as_only_member(settings, group, offsets, set(partitions))
            else:
                raise Refused(
                    _active_message(group, f"the broker lists {state.members} member(s) ({state.state})")
                    + " (Tansu keeps listing a member that left: once every instance is stopped, add --confirm-stopped)"
                )
            after = await committed_offsets(admin, group, list(offsets))
            if after != offsets:
                raise Refused(f"the broker did not keep the new offsets of {group}: nothing is certain, look again")
    return _report(out, group, target, moves, dry_run, prefix, state)


def _candidate_topics(group: str, prefix: str, chosen: list[str]) -> list[str]:
    if chosen:
        return [full_topic(name, prefix) for name in chosen]
    service = service_of(group, prefix)
    if service is not None:
        return [topic_for(t, prefix) for t in sorted(CONSUMES[service])]
    return [t for t in all_topics(prefix) if not t.endswith(".dlq")]


async def _commit_from_outside(settings: CliSettings, group: str, offsets: dict[TopicPartition, int | None]) -> None:
    """The group has no member: commit its offsets without joining it (a member appearing now makes this fail)."""
    async with kafka_reader(settings, group_id=group) as committer:
        committer.assign(list(offsets))
        try:
            await committer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if o is not None})
        except KafkaError as exc:
            raise Refused(f"{group} became active while rewinding ({type(exc).__name__}); nothing changed") from None


async def _commit_as_only_member(
    settings: CliSettings, group: str, offsets: dict[TopicPartition, int | None], everything: set[TopicPartition]
) -> None:
    """Join the group; commit only when given every partition of those topics: when no other member is alive."""
    topics = sorted({tp.topic for tp in everything})
    member = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=PARTITION_ASSIGNORS,  # the group's own: a broker may refuse a member without it
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    await member.start()
    try:
        deadline = asyncio.get_running_loop().time() + settings.cli_group_join_timeout_seconds
        while not member.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise Refused(_active_message(group, "the broker gave this command no partition"))
            await asyncio.sleep(0.2)
        held = member.assignment()
        if not everything <= held:
            others = len(everything - held)
            raise Refused(_active_message(group, f"another member holds {others} of its {len(everything)} partitions"))
        try:
            await member.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if o is not None})
        except KafkaError as exc:
            raise Refused(_active_message(group, f"the group rebalanced meanwhile ({type(exc).__name__})")) from None
    finally:
        await member.stop()


def _active_message(group: str, why: str) -> str:
    return f"consumer group {group} is active: {why}. Stop every instance of the service, then rewind again."


def _report(
    out: Output, group: str, target: Target, moves: list[Move], dry_run: bool, prefix: str, state: GroupState
) -> ExitCode:
    rows: list[dict[str, Any]] = [
        {
            "topic": short_name(m.topic, prefix),
            "partition": m.partition,
            "from": m.committed,
            "to": m.new,
            "rereads": m.rereads,
        }
        for m in moves
    ]
    to = target.moment.isoformat() if target.moment is not None else target.offset
    if out.json_mode:
        members = {"state": state.state, "members": state.members}
        out.document(
            {"group": group, "to": to, "dry_run": dry_run, "rewound": [] if dry_run else rows, "plan": rows} | members
        )
        return ExitCode.OK
    title = f"{'Would rewind' if dry_run else 'Rewound'} {group} to {to}"
    out.table(
        title,
        ["topic", "partition", "from", "to", "records to read again"],
        [[r["topic"], r["partition"], r["from"], r["to"], r["rereads"]] for r in rows],
        empty="nothing to do: the group is not past that point anywhere",
    )
    if rows and not dry_run:
        out.note("Start the service: it reads those records again; its inbox skips what it already handled.")
    if rows and dry_run and state.has_members:
        out.note(f"The broker lists {state.members} member(s): stop every instance first (then --confirm-stopped).")
    return ExitCode.OK
