"""Topic creation: one topic per event type and a dead-letter topic beside each, all with one partition count.

One count matters: a key lands at the same partition number on every topic, and the consumers' range assignor
gives an instance the same numbers of every topic, so one payment's events all reach one instance's one lane."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    IncompatibleBrokerVersion,
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    for_code,
)

from refundflow_shared.events import EventType, dlq_topic, topic_for
from refundflow_shared.kafka_config_requests import SET, IncrementalAlterConfigsRequest
from refundflow_shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

# How every member of a service's group (and the command line joining one) asks partitions to be shared. Range hands
# every member the same partition numbers of every topic (all topics have one partition count), so a payment's events
# on all topics reach one instance. Round robin (FastStream's default) splits them from 4 instances; it stays second
# only so that an instance joins a group of older ones during an upgrade (the group uses range once all list it).
PARTITION_ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)

# What a topic without retention.ms keeps on Kafka (log.retention.hours, 168): an older version's dead-letter topics
# created without it are taken to keep records so long.
KAFKA_DEFAULT_RETENTION_MS = 7 * 86_400_000


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


def retentions_below(retentions: Mapping[str, str | None], retention_ms: int) -> dict[str, int | None]:
    """The topics keeping records less than ``retention_ms``, with the retention.ms they have (None: unset, the
    broker's default, taken as Kafka's 7 days); -1 keeps them forever."""
    below: dict[str, int | None] = {}
    for topic, value in retentions.items():
        kept = KAFKA_DEFAULT_RETENTION_MS if value is None else int(value)
        if kept != -1 and kept < retention_ms:
            below[topic] = None if value is None else kept
    return below


def report_retention_raises(answers: Iterable[tuple[str, int, str | None]], retention_ms: int) -> list[str]:
    """Log each topic's (topic, error code, message) answer to a raise of its retention.ms: raised, or a warning that
    names what an operator must set. Returns the topics raised."""
    raised = []
    for topic, code, message in answers:
        if code == 0:
            raised.append(topic)
            continue
        if code == UnknownTopicOrPartitionError.errno:  # just created, with the retention asked; not described yet
            log.info("dead_letter_retention_unread", topic=topic)
            continue
        log.warning(
            "dead_letter_retention_not_raised",
            topic=topic,
            error=for_code(code).__name__,
            message=message,
            set=f"retention.ms={retention_ms}",
        )
    return raised


async def raise_dead_letter_retentions(bootstrap_servers: str, topics: Iterable[str], retention_ms: int) -> None:
    """Raise the retention.ms of the topics keeping records less than ``retention_ms``, never lowering one.

    An older version created dead-letter topics keeping 7 days, and topics that exist are not created again. The
    raise sets retention.ms alone (an incremental alter: the topic's other settings stay); a broker refusing it
    (ACLs) gets a warning naming the topic and the setting, and the service starts all the same."""
    topics = sorted(set(topics))
    try:
        answers, below = await _raise_retentions(bootstrap_servers, topics, retention_ms)
    except KafkaError as exc:  # best effort: the service starts, and the operator is told what to set
        log.warning(
            "dead_letter_retention_not_raised",
            topics=topics,
            error=type(exc).__name__,
            set=f"retention.ms={retention_ms}",
        )
        return
    for topic in report_retention_raises(answers, retention_ms):
        log.info(
            "dead_letter_retention_raised", topic=topic, previous_retention_ms=below[topic], retention_ms=retention_ms
        )


async def _raise_retentions(
    bootstrap_servers: str, topics: list[str], retention_ms: int
) -> tuple[list[tuple[str, int, str | None]], dict[str, int | None]]:
    """The answers to raising the retention of those of ``topics`` keeping less, and what those kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        retentions: dict[str, str | None] = {}
        answers = []  # (topic, error code, message): of the topics that could not be read, then of those raised
        for code, message, _, name, entries in described.resources:
            if code != 0:
                answers.append((name, code, message))
            else:
                retentions[name] = {entry[0]: entry[1] for entry in entries}.get("retention.ms")
        below = retentions_below(retentions, retention_ms)
        if below:
            answers += await set_retentions(admin, list(below), retention_ms)
    finally:
        await admin.close()
    return answers, below


async def set_retentions(
    admin: AIOKafkaAdminClient, topics: list[str], retention_ms: int
) -> list[tuple[str, int, str | None]]:
    """Each topic's (topic, error code, message) answer to setting its retention.ms alone."""
    resources = [(ConfigResourceType.TOPIC, t, [("retention.ms", SET, str(retention_ms))]) for t in topics]
    try:
        # Any broker takes a topic's config change (aiokafka's alter_configs sends it so too).
        response: Any = await admin._send_request(IncrementalAlterConfigsRequest(resources))
    # A broker older than Kafka 2.3, or one listing the request without its version 0: aiokafka sends nothing.
    except (IncompatibleBrokerVersion, NotImplementedError):
        return [(t, UnsupportedVersionError.errno, "no IncrementalAlterConfigs") for t in topics]
    return [(name, code, message) for code, message, _, name in response.responses]


async def ensure_service_topics(settings: ServiceSettings) -> None:
    """Every topic and its dead-letter topic, laid out as the settings say (partitions, replicas, retention).

    A dead-letter topic keeps its records INBOX_RETENTION_DAYS, not TOPIC_RETENTION_DAYS: a dead letter lives only
    there, and ``dlq replay`` takes one for as long as the inboxes remember what they handled. Those an older version
    created keeping less are raised so (never lowered: an operator may keep them longer)."""
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
            retention_ms=int(days * 86_400_000),
        )
    await raise_dead_letter_retentions(
        settings.kafka_bootstrap_servers, dead_letter_topics, int(settings.inbox_retention_days * 86_400_000)
    )
