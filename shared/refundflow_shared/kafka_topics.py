"""Topic creation: one topic per event type and a dead-letter topic beside each, all with one partition count.

One count matters: a key lands at the same partition number on every topic, and the consumers' range assignor
gives an instance the same numbers of every topic, so one payment's events all reach one instance's one lane."""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError

from refundflow_shared.events import EventType, dlq_topic, topic_for
from refundflow_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

# How every member of a service's group (and the command line joining one) asks partitions to be shared. Range hands
# every member the same partition numbers of every topic (all topics have one partition count), so a payment's events
# on all topics reach one instance. Round robin (FastStream's default) splits them from 4 instances; it stays second
# only so that an instance joins a group of older ones during an upgrade (the group uses range once all list it).
PARTITION_ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)


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


async def partition_counts(bootstrap_servers: str, topics: Iterable[str]) -> dict[str, int]:
    """How many partitions each of the (existing) topics has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(set(topics)))
    finally:
        await admin.close()
    return {topic["topic"]: len(topic["partitions"]) for topic in described}


async def ensure_service_topics(settings: ServiceSettings) -> None:
    """Every topic and its dead-letter topic, laid out as the settings say (partitions, replicas, retention).

    A dead-letter topic keeps its records INBOX_RETENTION_DAYS, not TOPIC_RETENTION_DAYS: a dead letter lives only
    there, and ``dlq replay`` takes one for as long as the inboxes remember what they handled."""
    topics = [topic_for(t, settings.topic_prefix) for t in EventType]
    for names, days in (
        (topics, settings.topic_retention_days),
        ([dlq_topic(t) for t in topics], settings.inbox_retention_days),
    ):
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            names,
            settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            min_insync_replicas=settings.topic_min_insync_replicas,
            retention_ms=int(days * 86_400_000),
        )
