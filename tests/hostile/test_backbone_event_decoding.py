"""Whatever arrives on a topic, decoding ends in an event or in ``InvalidEvent`` with a reason: never anything else.

A message that raised anything else used to escape the consumer, be NACKed and re-read forever (review finding 6).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundflow_shared.event_decoding import InvalidEvent, decode_event, read_headers
from refundflow_shared.events import Event, EventType, RefundRequested

CUSTOMER_EMAIL = "ada.lovelace@example.com"


def requested() -> RefundRequested:
    return RefundRequested(
        refund_id="ref_1",
        payment_id="pay_1",
        merchant_id="mer_1",
        customer_email=CUSTOMER_EMAIL,
        amount=4999,
        currency="EUR",
        reason="duplicate",
    )


def envelope() -> tuple[dict[str, str], bytes]:
    event = Event.wrap(requested(), source="refundflow/intake", sequence=1)
    return event.kafka_headers(), event.kafka_value()


def reason(headers: dict[str, str], value: bytes | None, **kwargs: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as raised:
        decode_event(headers, value, **kwargs)
    return raised.value


def test_a_json_integer_over_4300_digits_is_malformed_json() -> None:
    headers, _ = envelope()
    assert reason(headers, b'{"amount": ' + b"1" * 5000 + b"}").code == "malformed_json"


def test_deeply_nested_json_is_malformed_json() -> None:
    headers, _ = envelope()
    assert reason(headers, b"[" * 100_000 + b"]" * 100_000).code == "malformed_json"


def test_a_body_that_is_not_utf8_is_malformed_json() -> None:
    headers, _ = envelope()
    assert reason(headers, b'{"refund_id": "\xff\xfe"}').code == "malformed_json"


def test_an_event_over_the_size_cap_is_refused_before_it_is_parsed() -> None:
    headers, value = envelope()
    assert decode_event(headers, value, max_bytes=len(value) + 1000)
    error = reason(headers, value, max_bytes=len(value) // 2)
    assert error.code == "event_too_large"
    assert reason(headers, b"[" * 2_000_000, max_bytes=1_000_000).code == "event_too_large"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ([("ce_id", None)], "a header without a value"),
        ([("ce_source", b"\xff\xfe")], "a header that is not UTF-8"),
        ([("x-trace", None)], "any header without a value"),
        ([("ce_id", b"a"), ("ce_id", b"b")], "a repeated CloudEvents attribute"),
    ],
)
def test_malformed_headers_are_named(raw: list[tuple[str, bytes | None]], why: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        read_headers(raw)
    assert raised.value.code == "malformed_headers", why


def test_well_formed_headers_are_read_as_text() -> None:
    assert read_headers([("ce_id", b"abc"), ("x", b"")]) == {"ce_id": "abc", "x": ""}
    assert read_headers(None) == {}


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("ce_sequence", "first"),
        ("ce_sequence", "0"),
        ("ce_sequence", "-1"),
        ("ce_sequence", " 1"),
        ("ce_sequence", "9223372036854775808"),
        ("ce_sequence", "1" * 5000),
        ("ce_time", "yesterday"),
        ("ce_time", "2026-01-01T00:00:00"),
        ("ce_time", ""),
        ("ce_id", "not-a-uuid"),
        ("ce_id", "1" * 5000),
        ("ce_source", ""),
        ("ce_source", "s" * 5000),
        ("ce_subject", "s" * 5000),
    ],
)
def test_bad_cloudevents_attributes_are_invalid_attributes(attribute: str, value: str) -> None:
    headers, body = envelope()
    error = reason({**headers, attribute: value}, body)
    assert error.code == "invalid_attributes"
    assert attribute in error.message
    assert value not in error.message or len(value) < 3, "the attribute's value is not echoed"


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source", "ce_sequence", "ce_specversion"])
def test_a_missing_required_attribute_is_named(missing: str) -> None:
    headers, body = envelope()
    del headers[missing]
    error = reason(headers, body)
    assert error.code == "missing_attributes"
    assert missing in error.message


def test_an_event_on_another_types_topic_is_refused() -> None:
    headers, body = envelope()
    assert decode_event(headers, body, expected_type=EventType.REFUND_REQUESTED)
    assert reason(headers, body, expected_type=EventType.REFUND_APPROVED).code == "unexpected_event_type"


def test_validation_errors_name_the_fields_and_the_problems_but_never_the_values() -> None:
    headers, _ = envelope()
    payload = {**requested().model_dump(), "amount": CUSTOMER_EMAIL, "refund_id": ["Ada Lovelace"]}
    error = reason(headers, json.dumps(payload).encode())

    assert error.code == "validation_failed"
    assert "amount" in error.message
    assert "int_type" in error.message
    assert "refund_id" in error.message
    assert CUSTOMER_EMAIL not in error.message
    assert "Ada" not in error.message


def test_the_validation_message_stays_short_whatever_the_input() -> None:
    headers, _ = envelope()
    payload = {f"field_{i}_" + "x" * 300: i for i in range(500)}
    error = reason(headers, json.dumps(payload).encode())
    assert error.code == "validation_failed"
    assert len(error.message) <= 1000


# ---------------------------------------------------------------- anything at all


header_values = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40).map(str.encode))
header_names = st.one_of(
    st.sampled_from(["ce_id", "ce_type", "ce_source", "ce_time", "ce_sequence", "ce_specversion", "ce_dataschema"]),
    st.text(max_size=12),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _mutated_payload(draw: st.DrawFn) -> bytes:
    payload: dict[str, Any] = json.loads(envelope()[1])
    field = draw(st.sampled_from([*payload, "extra"]))
    payload[field] = draw(json_values)
    return json.dumps(payload).encode()


@st.composite
def arbitrary_records(draw: st.DrawFn) -> tuple[list[tuple[str, bytes | None]], bytes | None]:
    headers, value = envelope()
    raw: list[tuple[str, bytes | None]] = [(k, v.encode()) for k, v in headers.items()]
    kind = draw(st.sampled_from(["random", "mutated_headers", "mutated_body", "random_body"]))
    if kind == "random":
        raw = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
        return raw, draw(st.one_of(st.none(), st.binary(max_size=200)))
    if kind == "mutated_headers":
        for _ in range(draw(st.integers(1, 3))):
            raw.append((draw(header_names), draw(header_values)))
        return draw(st.permutations(raw)), value
    if kind == "mutated_body":
        return raw, _mutated_payload(draw)
    return raw, draw(st.binary(max_size=300))


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_records())
def test_any_record_decodes_or_is_invalid_with_a_reason(record: tuple[list[tuple[str, bytes | None]], bytes]) -> None:
    raw, value = record
    try:
        decode_event(read_headers(raw), value, expected_type=EventType.REFUND_REQUESTED)
    except InvalidEvent as exc:
        assert exc.code
        assert len(exc.message) <= 1000
