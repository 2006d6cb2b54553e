from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from refundflow_shared.event_decoding import InvalidEvent, decode_event
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    Event,
    EventType,
    PaymentRefunded,
    PaymentSucceeded,
    Product,
    RefundRequested,
    dlq_topic,
    topic_for,
)


def requested() -> RefundRequested:
    return RefundRequested(
        refund_id="ref_1",
        payment_id="pay_1",
        merchant_id="mer_1",
        customer_email="a@example.com",
        amount=4999,
        currency="EUR",
        reason="duplicate",
    )


def test_every_event_type_has_one_schema() -> None:
    assert set(EVENT_DATA_TYPES) == {t.value for t in EventType}


def test_an_event_round_trips_through_kafka_binary_mode() -> None:
    event = Event.wrap(requested(), source="refundflow/intake", sequence=7)
    headers, value = event.kafka_headers(), event.kafka_value()

    assert {"ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_specversion"} <= headers.keys()
    assert headers["ce_type"] == "refund.requested"
    assert headers["ce_subject"] == "ref_1"
    assert json.loads(value)["amount"] == 4999
    assert decode_event(headers, value) == event
    assert event.partition_key == "pay_1"


def test_topics_are_named_as_the_event_type_with_a_dead_letter_topic_beside() -> None:
    assert topic_for(EventType.REFUND_APPROVED) == "refund.approved"
    assert topic_for("refund.approved", "test.") == "test.refund.approved"
    assert dlq_topic("refund.approved") == "refund.approved.dlq"


@pytest.mark.parametrize(
    ("change_headers", "value", "code"),
    [
        ({"ce_type": "refund.unknown"}, None, "unknown_event_type"),
        ({"ce_dataschema": "urn:refundflow:refund.requested:v2"}, None, "unknown_schema_version"),
        ({"ce_specversion": "0.3"}, None, "unsupported_specversion"),
        ({}, b"[1, 2", "malformed_json"),
        ({}, b'{"refund_id": "r"}', "validation_failed"),
        ({"ce_sequence": "first"}, None, "invalid_attributes"),
    ],
)
def test_what_can_never_be_handled_is_named(change_headers: dict[str, str], value: bytes | None, code: str) -> None:
    event = Event.wrap(requested(), source="test", sequence=1)
    with pytest.raises(InvalidEvent) as raised:
        decode_event({**event.kafka_headers(), **change_headers}, value if value is not None else event.kafka_value())
    assert raised.value.code == code


def test_payloads_refuse_floats_and_unknown_fields() -> None:
    """What a producer builds is held strictly: a field the contract does not have is a mistake, never emitted."""
    data = requested().model_dump()
    with pytest.raises(ValueError):
        RefundRequested.model_validate({**data, "amount": 49.99})
    with pytest.raises(ValueError):
        RefundRequested.model_validate({**data, "card_number": "4242424242424242"})


def test_a_consumer_reads_past_fields_a_newer_producer_added() -> None:
    """A newer version writes fields this one does not know (in a rolling deploy, after a rollback): read, not
    dead-lettered, and the unknown fields are dropped, at the top and inside a nested object alike."""
    paid = PaymentSucceeded(
        payment_id="pay_1",
        merchant_id="mer_1",
        customer_email="a@example.com",
        amount=4999,
        currency="EUR",
        provider_payment_id="pi_1",
        paid_at=datetime(2026, 1, 2, tzinfo=UTC),
        product=Product(id="prod_1", name="Pro plan", kind="one_time"),
    )
    event = Event.wrap(paid, source="refundflow/intake", sequence=1)
    newer = json.loads(event.kafka_value())
    newer["loyalty_tier"] = "gold"
    newer["product"]["sku"] = "PRO-1"

    decoded = decode_event(event.kafka_headers(), json.dumps(newer).encode())

    assert decoded.data == paid
    assert "loyalty_tier" not in decoded.data.model_dump()


@pytest.mark.parametrize(
    "change",
    [
        {"amount": None},  # a known field of the wrong type
        {"amount": "4999"},
        {"amount": 0},  # out of the contract's range
        {"loyalty_tier": "gold", "currency": None},  # an unknown field beside a broken known one
    ],
)
def test_a_consumer_still_refuses_a_known_field_that_is_wrong(change: dict[str, object]) -> None:
    event = Event.wrap(requested(), source="refundflow/intake", sequence=1)
    payload = json.loads(event.kafka_value()) | change
    with pytest.raises(InvalidEvent) as raised:
        decode_event(event.kafka_headers(), json.dumps(payload).encode())
    assert raised.value.code == "validation_failed"


def test_a_consumer_still_refuses_a_missing_field_beside_unknown_ones() -> None:
    event = Event.wrap(requested(), source="refundflow/intake", sequence=1)
    payload = json.loads(event.kafka_value())
    del payload["refund_id"]
    with pytest.raises(InvalidEvent) as raised:
        decode_event(event.kafka_headers(), json.dumps({**payload, "refund_ref": "ref_1"}).encode())
    assert (raised.value.code, raised.value.message) == ("validation_failed", "refund_id: missing")


def test_structured_rendering_carries_the_sequence_for_webhooks() -> None:
    data = PaymentRefunded(
        payment_id="pay_1",
        merchant_id="m",
        refund_id="r",
        amount=5,
        currency="JPY",
        refunded_amount=5,
        remaining_amount=0,
    )
    rendered = Event.wrap(data, source="s", sequence=3).webhook_json()
    assert rendered["sequence"] == 3
    assert rendered["data"]["remaining_amount"] == 0
    assert datetime.fromisoformat(rendered["time"]).tzinfo == UTC
