"""The event contract: every event Refundflow emits or consumes, defined once.

One topic per event type, named as the type (optionally prefixed, for tests and shared clusters).
Kafka key = payment id, so all events of one payment stay in one partition, in order.
The envelope is CloudEvents 1.0 in Kafka binary mode: attributes as ``ce_*`` headers, JSON data.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from refundflow_shared.money import Currency, MinorUnits

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/json"


class EventType(StrEnum):
    PAYMENT_SUCCEEDED = "payment.succeeded"
    REFUND_REQUESTED = "refund.requested"
    REFUND_APPROVED = "refund.approved"
    REFUND_REJECTED = "refund.rejected"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    PAYMENT_REFUNDED = "payment.refunded"


class EventData(BaseModel):
    """Base of every event payload. Every event belongs to one merchant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[EventType]
    schema_version: ClassVar[int] = 1

    merchant_id: str

    @classmethod
    def dataschema(cls) -> str:
        return f"urn:refundflow:{cls.event_type.value}:v{cls.schema_version}"

    def partition_key(self) -> str:
        """The Kafka key: events with the same key stay in order. Payment events use the payment id."""
        return self.merchant_id

    def subject(self) -> str:
        return self.partition_key()


class PaymentEventData(EventData):
    """An event about one payment: keyed, ordered and sequenced by the payment id."""

    payment_id: str

    def partition_key(self) -> str:
        return self.payment_id


class _Priced(PaymentEventData):
    amount: MinorUnits
    currency: Currency


class Product(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    kind: Literal["one_time", "subscription"]


class PaymentSucceeded(_Priced):
    event_type = EventType.PAYMENT_SUCCEEDED

    customer_email: str
    provider_payment_id: str
    paid_at: datetime
    product: Product


class _RefundEvent(PaymentEventData):
    refund_id: str
    customer_email: str

    def subject(self) -> str:
        return self.refund_id


class RefundRequested(_Priced, _RefundEvent):
    event_type = EventType.REFUND_REQUESTED

    reason: str


class RefundApproved(_Priced, _RefundEvent):
    event_type = EventType.REFUND_APPROVED

    provider_payment_id: str
    payment_amount: MinorUnits
    approved_by: str


class RefundRejected(_RefundEvent):
    event_type = EventType.REFUND_REJECTED

    note: str | None = None


class RefundSucceeded(_Priced, _RefundEvent):
    event_type = EventType.REFUND_SUCCEEDED

    provider_refund_id: str


class RefundFailed(_Priced, _RefundEvent):
    event_type = EventType.REFUND_FAILED

    failure_reason: str
    failure_message: str | None = None


class PaymentRefunded(_Priced):
    """A refund of ``amount`` reached the customer; totals are after this refund."""

    event_type = EventType.PAYMENT_REFUNDED

    refund_id: str
    refunded_amount: MinorUnits
    remaining_amount: MinorUnits


EVENT_DATA_TYPES: dict[str, type[EventData]] = {
    cls.event_type.value: cls
    for cls in (
        PaymentSucceeded,
        RefundRequested,
        RefundApproved,
        RefundRejected,
        RefundSucceeded,
        RefundFailed,
        PaymentRefunded,
    )
}


def topic_for(event_type: EventType | str, prefix: str = "") -> str:
    return f"{prefix}{EventType(event_type).value}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


class Event(BaseModel):
    """A CloudEvents 1.0 envelope around one payload."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: EventType
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    specversion: Literal["1.0"] = SPEC_VERSION
    dataschema: str
    sequence: int = Field(ge=1, description="per payment and source, gap-free, starting at 1")
    data: EventData

    @classmethod
    def wrap(cls, data: EventData, *, source: str, sequence: int) -> Event:
        return cls(
            source=source,
            type=data.event_type,
            subject=data.subject(),
            dataschema=data.dataschema(),
            sequence=sequence,
            data=data,
        )

    @property
    def partition_key(self) -> str:
        return self.data.partition_key()

    def kafka_headers(self) -> dict[str, str]:
        return {
            "ce_specversion": self.specversion,
            "ce_id": str(self.id),
            "ce_source": self.source,
            "ce_type": self.type.value,
            "ce_time": self.time.isoformat(),
            "ce_subject": self.subject,
            "ce_dataschema": self.dataschema,
            "ce_sequence": str(self.sequence),
            "ce_partitionkey": self.partition_key,
            "content-type": CONTENT_TYPE,
        }

    def kafka_value(self) -> bytes:
        return self.data.model_dump_json().encode()

    def to_json(self) -> dict[str, Any]:
        """Structured-mode rendering (attributes and data in one object), e.g. for webhooks."""
        return {**self.model_dump(mode="json", exclude={"data"}), "data": self.data.model_dump(mode="json")}


class InvalidEvent(ValueError):
    """A message that can never be handled: it belongs in the dead-letter topic, with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def decode_event(headers: dict[str, str], value: bytes | None) -> Event:
    """Read a CloudEvent in Kafka binary mode; raise InvalidEvent for anything not handleable."""
    missing = [h for h in ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_sequence") if h not in headers]
    if missing:
        raise InvalidEvent("missing_attributes", f"missing CloudEvents headers: {', '.join(missing)}")
    if headers["ce_specversion"] != SPEC_VERSION:
        raise InvalidEvent("unsupported_specversion", f"specversion {headers['ce_specversion']!r}")
    data_cls = EVENT_DATA_TYPES.get(headers["ce_type"])
    if data_cls is None:
        raise InvalidEvent("unknown_event_type", f"no schema for type {headers['ce_type']!r}")
    dataschema = headers.get("ce_dataschema", data_cls.dataschema())
    if dataschema != data_cls.dataschema():
        raise InvalidEvent("unknown_schema_version", f"{dataschema!r}, this consumer reads {data_cls.dataschema()!r}")
    try:
        payload = json.loads(value or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEvent("malformed_json", str(exc)) from None
    try:
        data = data_cls.model_validate(payload)
        return Event(
            id=uuid.UUID(headers["ce_id"]),
            source=headers["ce_source"],
            type=EventType(headers["ce_type"]),
            time=datetime.fromisoformat(headers["ce_time"]) if "ce_time" in headers else datetime.now(UTC),
            subject=headers.get("ce_subject", data.subject()),
            dataschema=dataschema,
            sequence=int(headers["ce_sequence"]),
            data=data,
        )
    except (ValidationError, ValueError) as exc:
        raise InvalidEvent("validation_failed", str(exc)) from None
