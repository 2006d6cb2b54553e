"""One structlog setup for every service: JSON, one event per line, context bound via contextvars."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import structlog

from refundflow_shared.events import Event
from refundflow_shared.tracing import add_trace_ids

# Keys whose values must never reach a log line (card data, secrets, credentials).
_REDACTED_KEYS = frozenset(
    {"api_key", "authorization", "password", "secret", "token", "card", "card_number", "cvc", "number"}
)


# Path segments that are credentials: a customer's portal link, a team invite, a password reset.
_CREDENTIAL_IN_PATH = re.compile(r"(/portal/|/dashboard/invite/|/dashboard/reset-password/)(?!static/)[^/?#\s]+")


class _CredentialPathFilter(logging.Filter):
    """uvicorn's access line shows the route asked for, never the token in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) > 2 and isinstance(record.args[2], str):
            path = _CREDENTIAL_IN_PATH.sub(r"\1[redacted]", record.args[2])
            record.args = (*record.args[:2], path, *record.args[3:])
        return True


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in event_dict.keys() & _REDACTED_KEYS:
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and stdlib logging to stdout as JSON lines (rendered by orjson: logging is on the hot path)."""

    def add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    processors: list[Any] = [
        add_service,
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*processors, structlog.processors.JSONRenderer(serializer=_json_bytes)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=processors,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(serializer=_json_text),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _CredentialPathFilter) for f in access.filters):
        access.addFilter(_CredentialPathFilter())
    # One line per outbound call is noise (and a URL may be a credential): the SDKs' request logs stay off.
    for chatty in ("httpx", "stripe"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def _json_bytes(event_dict: dict[str, Any], **_: Any) -> bytes:
    return orjson.dumps(event_dict, default=repr)


def _json_text(event_dict: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event_dict, default=repr).decode()


def bind_event(event: Event) -> None:
    """Bind the event's identifiers so every line logged while handling it carries them."""
    ids = {"event_id": str(event.id), "event_type": event.type.value, "merchant_id": event.data.merchant_id}
    for key in ("payment_id", "refund_id"):
        if (value := getattr(event.data, key, None)) is not None:
            ids[key] = value
    structlog.contextvars.bind_contextvars(**ids)


def unbind_event() -> None:
    structlog.contextvars.unbind_contextvars("event_id", "event_type", "merchant_id", "payment_id", "refund_id")


@contextmanager
def bound(event: Event) -> Iterator[None]:
    """The event's identifiers on every line logged within."""
    bind_event(event)
    try:
        yield
    finally:
        unbind_event()
