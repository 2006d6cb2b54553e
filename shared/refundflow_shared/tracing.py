"""Distributed tracing: one W3C trace per request, from the HTTP call through every event to the provider call,
the email and the webhook.

The trace context travels as a ``traceparent``: the HTTP header on the way in (and on webhooks on the way out), the
CloudEvents distributed-tracing extension on events (Kafka header ``ce_traceparent``, stored with the outbox row's
headers), and a column where work waits in a table (the processor's attempts, the notifier's messages and webhook
events). Spans are made only where the work is (an HTTP request, a handled event, a provider call, an email, a
webhook delivery): a handful per refund, a few microseconds each.

Spans leave the process over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is
set; the SDK reads the other standard ``OTEL_*`` variables itself. Without it, spans are not recorded at all, but their
ids still reach the logs and travel on (with the W3C "sampled" flag off).

A traceparent read from outside (a header, an event, a row) is hostile input: anything but a well-formed one
starts a new trace, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

EVENT_HEADER = "ce_traceparent"  # the CloudEvents distributed-tracing extension, in Kafka binary mode
HTTP_HEADER = "traceparent"
_MAX_LENGTH = 256  # a traceparent is 55 characters; a longer one is not read at all
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("refundflow")
_provider: TracerProvider | None = None


def configure_tracing(service: str) -> None:
    """Install the process's tracer provider (once: in-process tests run several services), exporting over OTLP/HTTP
    when an endpoint is configured."""
    global _provider  # one tracer provider per process, like the logging setup
    if _provider is not None:
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or f"refundflow-{service}"
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    # Not exporting, spans are not recorded (ids only: they still reach the logs and travel on): 40% cheaper. Else
    # the SDK's sampler (OTEL_TRACES_SAMPLER, by default the parent's decision, or on).
    sampler = None if exporting else ALWAYS_OFF
    _provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # only when exporting

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


def flush() -> None:
    """Send the spans still waiting in the batch (at shutdown)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def parent_from(traceparent: object) -> otel_context.Context:
    """The context a traceparent from outside continues; an empty one (a new trace) for anything malformed."""
    if not isinstance(traceparent, str) or len(traceparent) > _MAX_LENGTH:
        return otel_context.Context()
    return _propagator.extract({HTTP_HEADER: traceparent}, context=otel_context.Context())


@contextmanager
def span(
    name: str,
    *,
    traceparent: object = None,
    continues: bool = False,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[trace.Span]:
    """A current span for ``name``: a child of the current span, or (``continues``) of ``traceparent`` when it is
    well-formed, else the root of a new trace."""
    parent = parent_from(traceparent) if continues else None
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as current:
        yield current


def current_traceparent() -> str | None:
    """The current span as a traceparent, to send or store; None when no span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def trace_id_of(traceparent: object) -> str | None:
    """The trace id of a stored traceparent (for people: logs and the CLI show trace ids)."""
    context = trace.get_current_span(parent_from(traceparent)).get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def event_traceparent(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    """The ``ce_traceparent`` of a Kafka record's raw headers, if it has a readable one."""
    for name, value in headers or ():
        if name == EVENT_HEADER and value is not None:
            return value.decode("utf-8", errors="replace")
    return None


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids on every line logged within it."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", f"{context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{context.span_id:016x}")
    return event_dict
