"""A Kafka record as an operator reads it: the CloudEvent it holds, or why it holds none, and for a dead-lettered
record why it was parked. Reading never fails: whatever the record holds, it becomes a description."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord

from refundflow_cli.output import mask_emails, redacted
from refundflow_shared.event_decoding import InvalidEvent, decode_event, printable_headers, read_headers

DLQ_HEADER_PREFIX = "dlq_"
# Any event the services could have written; the services' own cap applies when they consume it.
_READ_LIMIT = 4 * 1024 * 1024
_SUMMARY_CHARS = 240

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def record_time(record: Record) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def dead_letter_headers(record: Record) -> dict[str, str]:
    return {k: v for k, v in printable_headers(record.headers).items() if k.startswith(DLQ_HEADER_PREFIX)}


def describe(record: Record, topic_name: str) -> dict[str, Any]:
    """The record as JSON-like data: position, key, and ``event`` or ``undecodable`` (plus ``dead_letter``)."""
    found: dict[str, Any] = {
        "topic": topic_name,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record_time(record).isoformat(timespec="milliseconds"),
        "key": (record.key or b"").decode("utf-8", errors="replace"),
    }
    try:
        event = decode_event(read_headers(record.headers), record.value, max_bytes=_READ_LIMIT)
    except InvalidEvent as exc:
        found["undecodable"] = {"reason": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - a reader must survive any record; say what went wrong instead
        found["undecodable"] = {"reason": "undecodable", "message": type(exc).__name__}
    else:
        found["event"] = {
            "id": str(event.id),
            "type": event.type.value,
            "source": event.source,
            "time": event.time.isoformat(),
            "sequence": event.sequence,
            "subject": event.subject,
            "data": event.data.model_dump(mode="json"),
        }
    if dlq := dead_letter_headers(record):
        found["dead_letter"] = {key.removeprefix(DLQ_HEADER_PREFIX): value for key, value in dlq.items()}
    return found


def one_line(found: dict[str, Any]) -> str:
    """``time  topic[partition]@offset  key  type  id  field=value ...``, emails masked."""
    head = f"{found['timestamp']}  {found['topic']}[{found['partition']}]@{found['offset']}  key={found['key'] or '-'}"
    if "event" in found:
        event = found["event"]
        fields = " ".join(f"{k}={_scalar(v)}" for k, v in redacted(event["data"]).items() if _shown(v))
        body = f"{event['type']}  id={event['id']}  seq={event['sequence']}  {fields}"
    else:
        problem = found["undecodable"]
        body = f"UNDECODABLE {problem['reason']}: {problem['message']}"
    line = f"{head}  {body}"
    if len(line) > _SUMMARY_CHARS + len(head):
        line = line[: _SUMMARY_CHARS + len(head)] + "…"
    if dead := found.get("dead_letter"):
        origin = f"{dead.get('original_topic', '?')}[{dead.get('original_partition', '?')}]"
        origin += f"@{dead.get('original_offset', '?')}"
        line += f"  | dead-lettered by {dead.get('consumer', '?')}: {dead.get('reason', '?')} from {origin}"
    return mask_emails(line)


def _shown(value: Any) -> bool:
    return value not in (None, "", [], {}) and not isinstance(value, dict | list)


def _scalar(value: Any) -> str:
    text = str(value)
    if " " not in text and "@" not in text:
        return text
    # In double quotes: repr's ' (and the field's name and =) would read as the start of an address's local part.
    return json.dumps(text, ensure_ascii=False)
