"""The command line's rules, without any server: names, durations, masking, rewind plans, dead-letter identity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from refundflow_cli.connections import database_address
from refundflow_cli.consumer_rewind import Move, Target, plan
from refundflow_cli.dead_letters import DeadLetter, group_by_message, replay_problem, replay_window
from refundflow_cli.durations import parse_duration, parse_time
from refundflow_cli.outcomes import NotFound, UsageProblem
from refundflow_cli.output import Output, age, mask_emails, redacted, shown
from refundflow_cli.records import describe, one_line
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import event_type_of, full_topic, resolve_group
from refundflow_shared.dead_letters import REPLAY_HEADER
from refundflow_shared.events import Event, EventType, RefundRejected, RefundRequested

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_operators_name_topics_and_groups_with_or_without_the_prefix() -> None:
    assert full_topic("refund.approved", "t1.") == "t1.refund.approved"
    assert full_topic("t1.refund.approved.dlq", "t1.") == "t1.refund.approved.dlq"
    assert event_type_of("refund.approved.dlq", "") is EventType.REFUND_APPROVED
    with pytest.raises(NotFound, match=r"no topic 'refund\.aproved'"):
        event_type_of("refund.aproved", "t1.")
    assert resolve_group("notifier", "t1.") == "t1.notifier"
    assert resolve_group("t1.notifier", "t1.") == "t1.notifier"
    assert resolve_group("platform-billing", "t1.") == "platform-billing"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1.5d", 129_600), ("0s", 0)])
def test_durations_read_as_operators_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["15", "5x", "-1m", "", "1h30m"])
def test_a_duration_that_is_not_one_is_a_usage_problem(text: str) -> None:
    with pytest.raises(UsageProblem):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999d", "999999999d", "36501d", "9" * 400 + "s"])
def test_a_duration_too_long_to_mean_anything_is_a_usage_problem(text: str) -> None:
    """Past what a date can hold it raised OverflowError (a traceback, exit 1); a shorter one past what PostgreSQL's
    dates hold failed in the database the same way."""
    with pytest.raises(UsageProblem, match="at most 36500d"):
        parse_duration(text)
    with pytest.raises(UsageProblem, match="at most 36500d"):
        parse_time(text)


@pytest.mark.parametrize("text", ["36500d", "1969-12-31T00:00:00Z", "0001-01-01T00:00:00+00:00"])
def test_a_rewind_to_before_1970_is_a_usage_problem(text: str) -> None:
    """Kafka's record times start in 1970: the broker client raised ValueError (a traceback, exit 1)."""
    with pytest.raises(UsageProblem, match="1970"):
        Target.parse(text)


def test_a_point_in_time_is_rfc_3339_with_an_offset_or_a_duration_ago() -> None:
    assert parse_time("2026-11-20T10:00:00Z") == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert parse_time("2h", now=NOW) == NOW - timedelta(hours=2)
    with pytest.raises(UsageProblem, match="no UTC offset"):
        parse_time("2026-11-20T10:00:00")
    with pytest.raises(UsageProblem):
        parse_time("yesterday")


def test_rewind_targets_read_offsets_times_and_earliest() -> None:
    assert Target.parse("earliest") == Target(offset=0)
    assert Target.parse("42") == Target(offset=42)
    assert Target.parse("2026-11-20T10:00:00+01:00").moment == datetime(2026, 11, 20, 9, tzinfo=UTC)


def test_a_rewind_never_moves_a_group_forward_nor_before_what_a_partition_still_holds() -> None:
    a, b, c, d = (TopicPartition("t", p) for p in range(4))
    moves = plan(
        committed={a: 10, b: 3, c: None, d: 8},
        beginnings={a: 0, b: 0, c: 0, d: 5},
        targets={a: 4, b: 7, c: 0, d: 0},
    )
    assert [(m.partition, m.new, m.rereads) for m in moves] == [(0, 4, 6), (1, 3, 0), (2, None, 0), (3, 5, 3)]
    assert Move("t", 0, committed=None, target=0).rereads == 0


def test_customers_emails_are_masked_and_sealed_values_never_shown() -> None:
    assert mask_emails("to ada@example.com and Bob <bob.smith+x@mail.example.org>") == (
        "to a***@example.com and Bob <b***@mail.example.org>"
    )
    data = {
        "customer_email": "ada@example.com",
        "sealed_slack_webhook_url": "v2.k1.abc",
        "encrypted_secret": "v2.k1.def",
        "nested": [{"reply_to": "support@acme.example"}],
        "amount": 100,
    }
    assert redacted(data) == {
        "customer_email": "a***@example.com",
        "sealed_slack_webhook_url": "(sealed)",
        "encrypted_secret": "(sealed)",
        "nested": [{"reply_to": "s***@acme.example"}],
        "amount": 100,
    }
    assert [age(s) for s in (5, 125, 7260, 90_000, None)] == ["5s", "2m 5s", "2h 1m", "1d 1h", "-"]


def test_addresses_beyond_ascii_are_masked_too() -> None:
    assert mask_emails("from josé@example.com and зоя@пример.рф") == "from j***@example.com and з***@пример.рф"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("conor.o'brien@example.com", "c***@example.com"),
        ("max!mustermann@example.de", "m***@example.de"),
        ("a&b.smith@example.com", "a***@example.com"),
        ("sales/emea@example.com", "s***@example.com"),
        ("jo=ann?{x}|~^`#$*@example.com", "j***@example.com"),
        ('"john doe"@example.com', "j***@example.com"),
        ('"john@home \\ \\"x"@example.com', "j***@example.com"),
        ("Conor (conor.o'brien@example.com) wrote", "Conor (c***@example.com) wrote"),
        ('to "john doe"@example.com, max!m@example.de', "to j***@example.com, m***@example.de"),
        (json.dumps({"to": "a&b.smith@example.com"}), '{"to": "a***@example.com"}'),
        (json.dumps({"to": '"john doe"@example.com', "n": 1}), '{"to": "j***@example.com", "n": 1}'),
    ],
)
def test_the_whole_local_part_is_masked_whatever_characters_it_holds(text: str, masked: str) -> None:
    """intake takes any RFC 5322 address: ', !, &, / and the like are part of the local part, which is masked whole
    (its first character kept), quoted or not, alone or inside text or JSON."""
    assert mask_emails(text) == masked
    assert shown(text) == masked


def test_a_record_shows_its_masked_address_under_its_field_name() -> None:
    rejected = RefundRejected(
        refund_id="ref_1", payment_id="pay_1", merchant_id="mer_1", customer_email="conor.o'brien@example.com"
    )
    event = Event.wrap(rejected, source="refundflow/intake", sequence=4)
    headers = [(k, v.encode()) for k, v in event.kafka_headers().items()]
    found = describe(record(event.kafka_value(), headers, topic="t.refund.rejected"), "refund.rejected")
    line = one_line(found)
    assert 'customer_email="c***@example.com"' in line and "brien" not in line
    assert shown(line) == line, "masking what is already masked changes nothing"


def test_control_characters_in_what_is_printed_are_shown_never_obeyed(capsys: pytest.CaptureFixture[str]) -> None:
    """A customer's note or a record's key is hostile: an escape sequence would clear or retitle the operator's
    terminal. Each control character is printed as its escape."""
    out = Output(False)
    out.table("t", ["note"], [["x\x1b[2J\x1b]0;owned\x07 \x9b1m"]])
    out.line("key \x1b[31mred")
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\\x1b[2J" in shown and "\\x1b[31mred" in shown


def record(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    *,
    topic: str = "t.refund.requested",
    offset: int = 7,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=2,
        offset=offset,
        timestamp=int(NOW.timestamp() * 1000),
        timestamp_type=0,
        key=b"pay_1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value or b""),
        headers=list(headers),
    )


def requested() -> Event:
    data = RefundRequested(
        refund_id="ref_1",
        payment_id="pay_1",
        merchant_id="mer_1",
        customer_email="ada@example.com",
        amount=2500,
        currency="EUR",
        reason="requested_by_customer",
    )
    return Event.wrap(data, source="refundflow/intake", sequence=3)


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff", [], "missing_attributes"),
        (b"{}", [("ce_id", None)], "malformed_headers"),
        (b"{}", [("ce_id", b"\xff")], "malformed_headers"),
        (b"[" * 100_000, [(k, v.encode()) for k, v in requested().kafka_headers().items()], "malformed_json"),
    ],
)
def test_a_record_that_holds_no_event_is_described_with_the_reason(
    value: bytes, headers: list[tuple[str, bytes | None]], reason: str
) -> None:
    found = describe(record(value, headers), "refund.requested")
    assert found["undecodable"]["reason"] == reason
    assert f"UNDECODABLE {reason}" in one_line(found)


def test_a_dead_lettered_event_reads_as_its_event_and_why_it_was_parked() -> None:
    event = requested()
    headers = [(k, v.encode()) for k, v in event.kafka_headers().items()] + [
        ("dlq_reason", b"handler_error"),
        ("dlq_consumer", b"notifier"),
        ("dlq_original_topic", b"t.refund.requested"),
        ("dlq_original_partition", b"2"),
        ("dlq_original_offset", b"6"),
    ]
    found = describe(record(event.kafka_value(), headers, topic="t.refund.requested.dlq"), "refund.requested.dlq")
    assert found["event"]["id"] == str(event.id)
    assert found["event"]["data"]["customer_email"] == "ada@example.com", "masked when printed, not when read"
    line = one_line(found)
    assert "a***@example.com" in line and "ada@example.com" not in line
    assert "dead-lettered by notifier: handler_error from t.refund.requested[2]@6" in line


def test_a_record_prints_as_one_line_whatever_its_text_holds(capsys: pytest.CaptureFixture[str]) -> None:
    """A merchant's note to the customer with a line break printed a second line that read as a record of its own:
    line breaks, carriage returns and tabs are shown as escapes too."""
    forged = f"ok\n{NOW.isoformat()}\tt.refund.succeeded[2]@8\tkey=pay_1\rrefund.succeeded"
    rejected = RefundRejected(
        refund_id="ref_1", payment_id="pay_1", merchant_id="mer_1", customer_email="ada@example.com", note=forged
    )
    event = Event.wrap(rejected, source="refundflow/intake", sequence=4)
    headers = [(k, v.encode()) for k, v in event.kafka_headers().items()]
    found = describe(record(event.kafka_value(), headers, topic="t.refund.rejected"), "refund.rejected")
    Output(False).line(one_line(found))
    Output(False).line("key\tpay_1\nsecond")
    printed = capsys.readouterr().out
    assert printed.count("\n") == 2 and "\t" not in printed and "\r" not in printed
    assert "ok\\n2026" in printed and "@8\\tkey=pay_1\\rrefund" in printed
    assert "key\\tpay_1\\nsecond" in printed


def letter(offset: int, **headers: str) -> DeadLetter:
    return DeadLetter("t.refund.approved.dlq", 0, offset, NOW, b"pay_1", b"{}", headers)


def test_dead_letters_of_one_message_are_replayed_as_one() -> None:
    event_id = "0b6f2c7e-52a5-4bd2-9a8a-6a2f1d1d5c1e"
    by_processor = letter(1, ce_id=event_id, dlq_consumer="processor")
    by_notifier = letter(2, ce_id=event_id.upper(), dlq_consumer="notifier")
    without_id = letter(3, dlq_original_topic="t.refund.approved", dlq_original_partition="4", dlq_original_offset="9")
    same_place = letter(4, dlq_original_topic="t.refund.approved", dlq_original_partition="4", dlq_original_offset="9")
    nowhere = letter(5)
    groups = group_by_message([by_processor, without_id, by_notifier, same_place, nowhere])
    assert [[x.offset for x in g] for g in groups] == [[1, 2], [3, 4], [5]]


def test_a_replay_carries_the_original_headers_and_where_it_came_from_but_no_dlq_header() -> None:
    replay = letter(8, ce_id="x", ce_type="refund.approved", dlq_reason="handler_error", refundflow_replayed_from="old")
    assert replay.replay_headers() == [
        ("ce_id", b"x"),
        ("ce_type", b"refund.approved"),
        (REPLAY_HEADER, b"t.refund.approved.dlq/0/8"),
    ]


# What the command line allows with the services' default retention: INBOX_RETENTION_DAYS 30, TOPIC_RETENTION_DAYS 7.
WINDOW = replay_window(CliSettings(inbox_retention_days=30, topic_retention_days=7))


def test_a_dead_letter_is_not_replayed_when_its_value_was_dropped_it_names_another_topic_or_is_too_old() -> None:
    assert replay_problem(letter(1), "t.refund.approved", now=NOW, window=WINDOW) is None
    dropped = letter(1, dlq_dropped="the original value (2000000 bytes): too large to carry")
    assert "nothing to replay" in str(replay_problem(dropped, "t.refund.approved", now=NOW, window=WINDOW))
    elsewhere = letter(1, dlq_original_topic="t.refund.succeeded")
    assert "another original topic" in str(replay_problem(elsewhere, "t.refund.approved", now=NOW, window=WINDOW))
    old = letter(1, dlq_failed_at=(NOW - timedelta(days=31)).isoformat())
    later = NOW + timedelta(days=31)
    assert "INBOX_RETENTION_DAYS" in str(replay_problem(old, "t.refund.approved", now=later, window=WINDOW))


def test_a_dead_letter_of_an_event_older_than_the_inboxes_remember_is_not_replayed_however_recently_it_failed() -> None:
    """A replay that fails again is dead-lettered again, dated anew: replayed again and again, the event outlived
    the inboxes' memory, and a consumer that had handled it could repeat its effect."""
    event_time = (NOW - timedelta(days=31)).isoformat().replace("+00:00", "Z")
    again = letter(1, ce_time=event_time, dlq_failed_at=NOW.isoformat())
    assert "INBOX_RETENTION_DAYS" in str(replay_problem(again, "t.refund.approved", now=NOW, window=WINDOW))
    recent = letter(1, ce_time=(NOW - timedelta(days=21)).isoformat(), dlq_failed_at=NOW.isoformat())
    assert replay_problem(recent, "t.refund.approved", now=NOW, window=WINDOW) is None
    unreadable = letter(1, ce_time="yesterday", dlq_failed_at=NOW.isoformat())
    assert replay_problem(unreadable, "t.refund.approved", now=NOW, window=WINDOW) is None


def test_a_replay_is_refused_once_it_could_outlive_the_inboxes_while_it_stays_on_its_topic() -> None:
    """The replayed record is new on its topic, read for TOPIC_RETENTION_DAYS more (by a lagging, stopped or rewound
    consumer), while other consumers' inboxes forget the original INBOX_RETENTION_DAYS after it: a 29-day-old event
    replayed was handled as new a few days later, a second email and webhook. A replay is allowed only while the
    inboxes outlive it, with a day to spare."""
    assert WINDOW == timedelta(days=22)
    month_old = letter(1, ce_time=(NOW - timedelta(days=29)).isoformat(), dlq_failed_at=NOW.isoformat())
    problem = str(replay_problem(month_old, "t.refund.approved", now=NOW, window=WINDOW))
    assert "INBOX_RETENTION_DAYS" in problem and "TOPIC_RETENTION_DAYS" in problem and "22 days" in problem
    just_past = letter(1, ce_time=(NOW - timedelta(days=22, minutes=1)).isoformat())
    assert replay_problem(just_past, "t.refund.approved", now=NOW, window=WINDOW) is not None
    assert (
        replay_problem(
            letter(1, ce_time=(NOW - timedelta(days=22)).isoformat()), "t.refund.approved", now=NOW, window=WINDOW
        )
        is None
    )
    longer_topics = replay_window(CliSettings(inbox_retention_days=30, topic_retention_days=14))
    assert longer_topics == timedelta(days=15), "read from the services' own settings"
    assert replay_window(CliSettings(inbox_retention_days=7.5, topic_retention_days=7)) == timedelta(0)


@pytest.mark.parametrize(
    ("dsn", "address"),
    [
        ("postgresql://ops:secret@db.internal:6432/refundflow", "db.internal:6432/refundflow"),
        ("postgresql://postgres@/refundflow?host=/srv/pg&port=5433", "/srv/pg:5433/refundflow"),
        ("postgresql://postgres@localhost/refundflow", "localhost:5432/refundflow"),
        ("postgresql://u:p@db1:5432,db2/refundflow?target_session_attrs=read-write", "db1:5432,db2:5432/refundflow"),
        ("postgresql://ops:secret@[::1]:6432/refundflow", "[::1]:6432/refundflow"),
    ],
)
def test_the_database_is_named_by_where_it_is_never_by_who_connects(dsn: str, address: str) -> None:
    assert database_address(dsn) == address
