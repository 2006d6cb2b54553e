"""Reading a Kafka record as a CloudEvent: the result is an ``Event`` or ``InvalidEvent`` with a reason, nothing else.

Every topic is hostile input. Whatever a record holds (bytes that are not JSON, an integer of 5000 digits, JSON
nested 100 000 deep, a header without a value), decoding names why it cannot be handled, so the consumer can park
it on the dead-letter topic and move on. Reasons name fields and problems, never the values: those may be PII.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TypeVar

from pydantic import ValidationError

from refundflow_shared.events import EVENT_DATA_TYPES, SPEC_VERSION, Event, EventData, EventType

# Below the 1 MiB that aiokafka's producer (max_request_size) and Kafka's brokers (message.max.bytes) accept by
# default, with room for the record's framing and the dead-letter headers.
DEFAULT_MAX_EVENT_BYTES = 900 * 1024
REQUIRED_ATTRIBUTES = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_sequence")
_SEQUENCE = re.compile(r"[1-9][0-9]{0,18}")
_MAX_MESSAGE = 1000
D = TypeVar("D", bound=EventData)


# Every code an InvalidEvent has (tests/unit/test_observability_config.py checks them against this file).
INVALID_EVENT_CODES = (
    "malformed_headers",
    "event_too_large",
    "missing_attributes",
    "unsupported_specversion",
    "unknown_event_type",
    "unexpected_event_type",
    "unknown_schema_version",
    "invalid_attributes",
    "malformed_json",
    "validation_failed",
)


class InvalidEvent(ValueError):
    """A message that can never be handled: it belongs in the dead-letter topic, with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message[:_MAX_MESSAGE]


def event_size(headers: Mapping[str, str], value: bytes) -> int:
    """What a record weighs against the size cap: its value and its headers, in bytes."""
    return len(value) + sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())


def read_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as text. A header without a value, one that is not UTF-8, or a repeated one is malformed."""
    headers: dict[str, str] = {}
    for name, value in raw or ():
        shown = _shown(name)
        if value is None:
            raise InvalidEvent("malformed_headers", f"header {shown} has no value")
        if name in headers:
            raise InvalidEvent("malformed_headers", f"header {shown} is repeated")
        try:
            headers[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("malformed_headers", f"header {shown} is not UTF-8") from None
    return headers


def printable_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The headers as near as text allows, for the dead-letter record of a message whose headers are malformed."""
    return {name: (value or b"").decode("utf-8", errors="replace") for name, value in raw or ()}


def decode_event(
    headers: Mapping[str, str],
    value: bytes | None,
    *,
    expected_type: EventType | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Event:
    """Read a CloudEvent in Kafka binary mode; raise InvalidEvent for anything that can never be handled."""
    body = value or b""
    if event_size(headers, body) > max_bytes:
        raise InvalidEvent("event_too_large", f"the event is over {max_bytes} bytes")
    missing = [h for h in REQUIRED_ATTRIBUTES if h not in headers]
    if missing:
        raise InvalidEvent("missing_attributes", f"missing CloudEvents headers: {', '.join(missing)}")
    if headers["ce_specversion"] != SPEC_VERSION:
        raise InvalidEvent("unsupported_specversion", f"ce_specversion is not {SPEC_VERSION}")
    data_cls = EVENT_DATA_TYPES.get(headers["ce_type"])
    if data_cls is None:
        raise InvalidEvent("unknown_event_type", f"no schema for ce_type {_shown(headers['ce_type'])}")
    if expected_type is not None and data_cls.event_type != expected_type:
        raise InvalidEvent("unexpected_event_type", f"a {data_cls.event_type.value} event on the {expected_type} topic")
    dataschema = headers.get("ce_dataschema", data_cls.dataschema())
    if dataschema != data_cls.dataschema():
        raise InvalidEvent("unknown_schema_version", f"ce_dataschema is not {data_cls.dataschema()}")
    if not headers["ce_source"]:
        raise InvalidEvent("invalid_attributes", "ce_source is empty")
    event_id, sequence, time = _attributes(headers)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, over 4300 digits, too deep
        raise InvalidEvent("malformed_json", _json_problem(exc)) from None
    try:
        data = read_event_data(data_cls, payload)
    except ValidationError as exc:
        raise InvalidEvent("validation_failed", validation_summary(exc)) from None
    try:
        return Event(
            id=event_id,
            source=headers["ce_source"],
            type=data_cls.event_type,
            subject=headers.get("ce_subject", data.subject()),
            dataschema=dataschema,
            sequence=sequence,
            data=data,
            **({"time": time} if time is not None else {}),
        )
    except ValidationError as exc:
        raise InvalidEvent("invalid_attributes", validation_summary(exc, prefix="ce_")) from None


def read_event_data(data_cls: type[D], payload: object) -> D:
    """An event's data as every consumer reads it, the tolerant reader: a field this version does not know (a newer
    producer's, in a rolling deploy or after a rollback) is ignored, at any depth; every field it knows is checked as
    strictly as ever. Producers stay strict: the event models refuse unknown fields, so we never emit one by mistake.
    """
    return data_cls.model_validate(payload, extra="ignore")


def _attributes(headers: Mapping[str, str]) -> tuple[uuid.UUID, int, datetime | None]:
    try:
        event_id = uuid.UUID(headers["ce_id"])
    except ValueError:
        raise InvalidEvent("invalid_attributes", "ce_id is not a UUID") from None
    sequence_text = headers["ce_sequence"]
    if not _SEQUENCE.fullmatch(sequence_text) or int(sequence_text) >= 2**63:
        raise InvalidEvent("invalid_attributes", "ce_sequence is not an integer from 1 to 2^63-1")
    if "ce_time" not in headers:
        return event_id, int(sequence_text), None
    try:
        time = datetime.fromisoformat(headers["ce_time"])
    except ValueError:
        raise InvalidEvent("invalid_attributes", "ce_time is not an RFC 3339 timestamp") from None
    if time.tzinfo is None:
        raise InvalidEvent("invalid_attributes", "ce_time has no UTC offset")
    return event_id, int(sequence_text), time


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number too long to read"


def validation_summary(exc: ValidationError, *, prefix: str = "") -> str:
    """Where validation failed and why (pydantic's error types), without the input: it may be a customer's data."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False)[:10]:
        where = prefix + ".".join(str(part)[:40] for part in error["loc"]) if error["loc"] else "(the payload)"
        problems.append(f"{where}: {error['type']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _shown(text: str) -> str:
    return repr(text[:40])
