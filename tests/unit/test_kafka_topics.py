"""Which dead-letter topics get their retention raised at start, what a refusal tells the operator, and which
topics' partition counts are compared."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import (
    LeaderNotAvailableError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)

from refundflow_shared.dead_letter_retention import (
    raise_dead_letter_retentions,
    report_retention_raises,
    retentions_below,
    set_retentions,
)
from refundflow_shared.kafka_topics import read_partition_counts
from refundflow_shared.structured_logging import configure_logging

WEEK, MONTH = 7 * 86_400_000, 30 * 86_400_000


@pytest.fixture
def logged(capfd: pytest.CaptureFixture[str]) -> Callable[[], list[dict[str, Any]]]:
    """The lines logged since the test began, as the services log them (JSON on standard output): structlog's own
    capture misses a module's logger cached by a test before in the same worker."""
    configure_logging("unit")
    capfd.readouterr()
    return lambda: [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]


def test_only_topics_keeping_records_less_are_raised_and_one_kept_forever_or_longer_never_is() -> None:
    retentions = {"a.dlq": str(WEEK), "b.dlq": None, "c.dlq": "-1", "d.dlq": str(2 * MONTH), "e.dlq": str(MONTH)}
    assert retentions_below(retentions, MONTH) == {"a.dlq": WEEK, "b.dlq": None}


def test_a_topic_without_retention_keeps_the_brokers_default_of_a_week() -> None:
    assert retentions_below({"b.dlq": None}, 5 * 86_400_000) == {}


def test_a_refused_raise_is_a_warning_naming_the_topic_and_what_to_set(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    answers = [("a.dlq", 0, None), ("b.dlq", TopicAuthorizationFailedError.errno, "denied")]
    raised = report_retention_raises(answers, MONTH)
    assert raised == ["a.dlq"]
    [warning] = logged()
    assert warning["level"] == "warning"
    assert warning["event"] == "dead_letter_retention_not_raised"
    assert (warning["topic"], warning["set"]) == ("b.dlq", f"retention.ms={MONTH}")
    assert warning["error"] == "TopicAuthorizationFailedError"


def test_a_topic_the_broker_cannot_describe_yet_is_left_out_not_counted_as_no_partitions() -> None:
    # Right after its creation, a broker whose metadata is behind answers for a topic with an error and no partitions:
    # counted as 0, it made the counts differ (and the gauge show 0) until the next start.
    def partitions(count: int, error: int = 0) -> dict[str, object]:
        return {"error_code": error, "partitions": [{"error_code": error, "partition": n} for n in range(count)]}

    described = [
        {"topic": "refund.requested", **partitions(6)},
        {"topic": "refund.approved", **partitions(0, UnknownTopicOrPartitionError.errno)},
        {"topic": "refund.failed", **partitions(0, LeaderNotAvailableError.errno)},
        {"topic": "refund.succeeded", **partitions(0)},
        {"topic": "team_alert.raised", **partitions(6)},
    ]
    counts, unread = read_partition_counts(described)
    assert counts == {"refund.requested": 6, "team_alert.raised": 6}
    assert unread == ["refund.approved", "refund.failed", "refund.succeeded"]


async def test_a_raise_that_cannot_reach_the_broker_is_a_warning_and_the_start_goes_on(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Best effort: the dead letters' retention is the operator's to set when the service cannot (README, Upgrading).
    await raise_dead_letter_retentions("127.0.0.1:1", ["a.dlq"], MONTH)
    [warning] = [entry for entry in logged() if entry["event"] == "dead_letter_retention_not_raised"]
    assert (warning["topics"], warning["set"]) == (["a.dlq"], f"retention.ms={MONTH}")


def test_a_topic_just_created_and_not_yet_described_is_no_warning(logged: Callable[[], list[dict[str, Any]]]) -> None:
    # Right after its creation (with the retention asked), a broker whose metadata is behind may not know the topic.
    raised = report_retention_raises([("a.dlq", UnknownTopicOrPartitionError.errno, None)], MONTH)
    assert raised == []
    assert [entry["level"] for entry in logged()] == ["info"]


class _BrokerWithoutVersionZero:
    """A broker listing IncrementalAlterConfigs without version 0: aiokafka raises before sending anything."""

    async def _send_request(self, request: object) -> object:
        raise NotImplementedError("Support for IncrementalAlterConfigsRequest_v0 has not yet been added")


async def test_a_broker_without_the_requests_version_is_an_answer_not_a_crash() -> None:
    answers = await set_retentions(_BrokerWithoutVersionZero(), ["a.dlq"], MONTH)
    assert [(topic, code) for topic, code, _ in answers] == [("a.dlq", UnsupportedVersionError.errno)]
