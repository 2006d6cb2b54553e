"""Topic creation: one topic per event type and a dead-letter topic beside each, all with one partition count.

One count matters: a key lands at the same partition number on every topic, and the consumers' range assignor
gives an instance the same numbers of every topic, so one payment's events all reach one instance's one lane."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError

from refundflow_shared.dead_letter_retention import raise_dead_letter_retentions
from refundflow_shared.events import EventType, dlq_topic, topic_for
from refundflow_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

# How every member of a service's group (and the command line joining one) asks partitions to be shared. Range hands
# every member the same partition numbers of every topic (all topics have one partition count), so a payment's events
# on all topics reach one instance. Round robin (FastStream's default) splits them from 4 instances; it stays second
# only so that an instance joins a group of older ones during an upgrade (the group uses range once all list it).
PARTITION_ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)

DAY_MS = 86_400_000


def all_topics(prefix: str = "") -> list[str]:
    topics = [topic_for(t, prefix) for t in EventType]
    return topics + [dlq_topic(t) for t in topics]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int = 1,
    retention_ms: int | None = None,
) -> None:
    """Create the topics that do not exist yet (idempotent; services call it on start).

    Existing topics are left as they are: in production they are created (and changed) by the operator.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        configs = {"min.insync.replicas": str(min_insync_replicas)}
        if retention_ms is not None:
            configs["retention.ms"] = str(retention_ms)
        layout = {"num_partitions": partitions, "replication_factor": replication_factor, "topic_configs": configs}
        response = await admin.create_topics([NewTopic(name=t, **layout) for t in missing])
        for topic, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"could not create topic {topic}: error code {code}")
        log.info("topics_created", topics=missing, partitions=partitions, replication_factor=replication_factor)
    finally:
        await admin.close()


def read_partition_counts(described: Iterable[Mapping[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """How many partitions each described topic has, and the topics the broker could not describe: an error (unknown
    topic, no leader yet) or no partitions, as a broker whose metadata is behind answers right after a creation."""
    counts: dict[str, int] = {}
    unread: list[str] = []
    for topic in described:
        if topic["error_code"] != 0 or not topic["partitions"]:
            unread.append(topic["topic"])
        else:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts, unread


async def partition_counts(
    bootstrap_servers: str, topics: Iterable[str], *, attempts: int = 5, pause_seconds: float = 0.2
) -> dict[str, int]:
    """How many partitions each of the (existing) topics has. A topic the broker cannot describe is asked again
    ``attempts`` times in all, then left out (and logged): counted as 0, it looked like a partition count differing."""
    counts: dict[str, int] = {}
    unread = sorted(set(topics))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(pause_seconds)
            read, unread = read_partition_counts(await admin.describe_topics(unread))
            counts |= read
            if not unread:
                break
    finally:
        await admin.close()
    if unread:
        log.warning("topic_partitions_unread", topics=unread, attempts=attempts)
    return counts


async def ensure_service_topics(settings: ServiceSettings) -> None:
    """Every topic and its dead-letter topic, laid out as the settings say (partitions, replicas, retention).

    A dead-letter topic keeps its records INBOX_RETENTION_DAYS, not TOPIC_RETENTION_DAYS: a dead letter lives only
    there, and ``dlq list`` shows it as long as the inboxes remember what they handled (``dlq replay`` takes one
    while the inboxes outlive its replay on the topic: INBOX_RETENTION_DAYS less TOPIC_RETENTION_DAYS). Those an
    older version created keeping less are raised so (never lowered: an operator may keep them longer)."""
    topics = [topic_for(t, settings.topic_prefix) for t in EventType]
    dead_letter_topics = [dlq_topic(t) for t in topics]
    for names, days in (
        (topics, settings.topic_retention_days),
        (dead_letter_topics, settings.inbox_retention_days),
    ):
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            names,
            settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            min_insync_replicas=settings.topic_min_insync_replicas,
            retention_ms=int(days * DAY_MS),
        )
    await raise_dead_letter_retentions(
        settings.kafka_bootstrap_servers, dead_letter_topics, int(settings.inbox_retention_days * DAY_MS)
    )
