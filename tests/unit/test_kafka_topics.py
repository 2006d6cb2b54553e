"""Which dead-letter topics get their retention raised at start, and what a refusal tells the operator."""

from __future__ import annotations

from aiokafka.errors import TopicAuthorizationFailedError
from structlog.testing import capture_logs

from refundflow_shared.kafka_topics import report_retention_raises, retentions_below

WEEK, MONTH = 7 * 86_400_000, 30 * 86_400_000


def test_only_topics_keeping_records_less_are_raised_and_one_kept_forever_or_longer_never_is() -> None:
    retentions = {"a.dlq": str(WEEK), "b.dlq": None, "c.dlq": "-1", "d.dlq": str(2 * MONTH), "e.dlq": str(MONTH)}
    assert retentions_below(retentions, MONTH) == {"a.dlq": WEEK, "b.dlq": None}


def test_a_topic_without_retention_keeps_the_brokers_default_of_a_week() -> None:
    assert retentions_below({"b.dlq": None}, 5 * 86_400_000) == {}


def test_a_refused_raise_is_a_warning_naming_the_topic_and_what_to_set() -> None:
    answers = [("a.dlq", 0, None), ("b.dlq", TopicAuthorizationFailedError.errno, "denied")]
    with capture_logs() as logs:
        raised = report_retention_raises(answers, MONTH)
    assert raised == ["a.dlq"]
    [warning] = logs
    assert warning["log_level"] == "warning"
    assert warning["event"] == "dead_letter_retention_not_raised"
    assert (warning["topic"], warning["set"]) == ("b.dlq", f"retention.ms={MONTH}")
    assert warning["error"] == "TopicAuthorizationFailedError"
