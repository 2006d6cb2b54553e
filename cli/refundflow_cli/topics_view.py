"""`refundflow topics`: every topic with its partitions and end offsets, and each service's consumer lag."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from refundflow_cli.broker_offsets import (
    GroupState,
    committed_offsets,
    consumer_groups,
    describe_group,
    existing_partitions,
    lag,
    offset_range,
    partitions_of,
)
from refundflow_cli.connections import kafka_admin, kafka_reader
from refundflow_cli.outcomes import ExitCode
from refundflow_cli.output import Output
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import CONSUMES, SERVICES, group_of, short_name
from refundflow_shared.events import topic_for
from refundflow_shared.kafka_topics import all_topics


async def show_topics(settings: CliSettings, out: Output) -> ExitCode:
    prefix = settings.topic_prefix
    expected = all_topics(prefix)
    async with kafka_admin(settings) as admin, kafka_reader(settings) as reader:
        layout = await existing_partitions(reader, expected)
        partitions = partitions_of(layout)
        beginnings, ends = await offset_range(reader, partitions)
        listed = set(await consumer_groups(admin))
        states: dict[str, GroupState] = {}
        committed: dict[str, dict[TopicPartition, int | None]] = {}
        for service in SERVICES:
            group = group_of(service, prefix)
            consumed = [tp for tp in partitions if tp.topic in {topic_for(t, prefix) for t in CONSUMES[service]}]
            if group in listed:
                states[service] = await describe_group(admin, group)
                committed[service] = await committed_offsets(admin, group, consumed)
            else:  # never started: when it does, it reads every record from the oldest
                states[service] = GroupState(group, "absent", 0)
                committed[service] = dict.fromkeys(consumed)

    topics: list[dict[str, Any]] = []
    totals = dict.fromkeys(SERVICES, 0)
    for topic in expected:
        parts = layout.get(topic)
        entry: dict[str, Any] = {"topic": short_name(topic, prefix), "name": topic, "exists": parts is not None}
        rows = []
        lags: dict[str, int] = {}
        for p in parts or []:
            tp = TopicPartition(topic, p)
            row: dict[str, Any] = {"partition": p, "beginning": beginnings[tp], "end": ends[tp], "lag": {}}
            for service in SERVICES:
                if tp in committed[service]:
                    behind = lag(committed[service][tp], beginnings[tp], ends[tp])
                    row["lag"][service] = behind
                    row.setdefault("committed", {})[service] = committed[service][tp]
                    lags[service] = lags.get(service, 0) + behind
            rows.append(row)
        for service, behind in lags.items():
            totals[service] += behind
        entry |= {
            "partitions": rows,
            "records": sum(r["end"] - r["beginning"] for r in rows),
            "end_offsets": [r["end"] for r in rows],
            "lag": lags,
        }
        topics.append(entry)
    groups = [
        {
            "service": service,
            "group": states[service].group,
            "state": states[service].state,
            "members": states[service].members,
            "lag": totals[service],
        }
        for service in SERVICES
    ]
    report = {"prefix": prefix, "topics": topics, "groups": groups}
    if out.json_mode:
        out.document(report)
        return ExitCode.OK
    out.table(
        "Topics",
        ["topic", "partitions", "records", "end offsets", *(f"{s} lag" for s in SERVICES)],
        [
            [
                t["topic"],
                len(t["partitions"]) if t["exists"] else "missing",
                t["records"],
                ",".join(str(e) for e in t["end_offsets"]),
                *(t["lag"].get(s, "") for s in SERVICES),
            ]
            for t in topics
        ],
    )
    out.table(
        "Consumer groups",
        ["service", "group", "state", "members", "lag"],
        [[g["service"], g["group"], g["state"], g["members"], g["lag"]] for g in groups],
    )
    if any(g["members"] for g in groups):
        out.note("A member the broker lists may have stopped: Tansu keeps one until another member joins.")
    return ExitCode.OK
