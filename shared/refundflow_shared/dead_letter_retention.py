"""Dead-letter topics an older version created keep their records 7 days; this version keeps them as long as the
inboxes remember (``dlq replay`` takes one for most of that time). At start each service raises those keeping less,
setting retention.ms alone (an incremental alter: a topic's other settings stay), never lowering one; best effort."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    IncompatibleBrokerVersion,
    KafkaError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    for_code,
)

from refundflow_shared.kafka_config_requests import SET, IncrementalAlterConfigsRequest

log = structlog.get_logger(__name__)

# What a topic without retention.ms keeps on Kafka (log.retention.hours, 168): an older version's dead-letter topics
# created without it are taken to keep records so long.
KAFKA_DEFAULT_RETENTION_MS = 7 * 86_400_000


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
