"""The notifier's typed records keep the shapes others read: intake's delivery log schema, field for field."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

from fastapi.encoders import jsonable_encoder

from refundflow_intake.api.webhook_schemas import Delivery, DeliveryAttempt, DeliveryLog, DeliveryState
from refundflow_notifier import records


def test_the_delivery_log_records_fill_every_field_intake_reads_and_nothing_is_renamed() -> None:
    """The internal API answers ``dataclasses.asdict`` of the records; intake validates it as ``DeliveryLog``."""
    at = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    endpoint = records.EndpointState(
        id="we_1",
        merchant_id="mer_1",
        url="https://example.com/hooks",
        event_types=["refund.succeeded"],
        enabled=False,
        deleted=False,
        consecutive_failures=3,
        disabled_reason="3 events in a row could not be delivered",
    )
    attempt = records.DeliveryAttempt(
        attempt=1, attempted_at="2026-01-02T03:04:05.6+00:00", status_code=None, latency_ms=12, error="timeout"
    )
    delivery = records.LoggedDelivery(
        id=7,
        event_id=uuid.UUID(int=1),
        event_type="refund.succeeded",
        replay=True,
        status="failed",
        attempts=1,
        next_attempt_at=at,
        created_at=at,
        finished_at=None,
        attempt_log=[attempt],
    )
    answer = {"endpoint": dataclasses.asdict(endpoint), "deliveries": [dataclasses.asdict(delivery)]}
    wire = json.loads(json.dumps(jsonable_encoder(answer)))

    assert set(wire["deliveries"][0]) == set(Delivery.model_fields)
    assert set(wire["deliveries"][0]["attempt_log"][0]) == set(DeliveryAttempt.model_fields)
    assert set(DeliveryState.model_fields) <= set(wire["endpoint"])
    log = DeliveryLog.model_validate(wire)
    assert log.endpoint is not None and log.endpoint.consecutive_failures == 3 and not log.endpoint.enabled
    [seen] = log.deliveries
    assert (seen.id, seen.event_id, seen.replay, seen.finished_at) == (7, str(uuid.UUID(int=1)), True, None)
    assert seen.attempt_log[0].attempted_at == datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def test_a_message_channel_reads_and_formats_as_the_text_stored_in_its_row() -> None:
    assert records.Channel("slack") is records.Channel.SLACK
    assert f"{records.Channel.EMAIL} customer_refund_succeeded" == "email customer_refund_succeeded"  # span names
    assert json.dumps({"channel": records.Channel.SLACK}) == '{"channel": "slack"}'  # log lines
