"""Reading a traceparent from outside: a well-formed one is continued, anything else starts a new trace; log lines
within a span carry its ids."""

from __future__ import annotations

from typing import Any

import pytest

from refundflow_shared import tracing

TRACE = "0af7651916cd43dd8448eb211c80319c"
WELL_FORMED = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture(autouse=True, scope="module")
def tracer_provider() -> None:
    tracing.configure_tracing("unit")


@pytest.mark.parametrize(
    "hostile",
    [
        None,
        "",
        42,
        "garbage",
        f"00-{'0' * 32}-b7ad6b7169203331-01",  # the all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # so is the all-zero span id
        f"ff-{TRACE}-b7ad6b7169203331-01",  # version ff is forbidden
        f"00-{TRACE.upper()}-B7AD6B7169203331-01",  # upper case is not hex as W3C spells it
        WELL_FORMED + "x" * 10_000,
        "00-\x00\n-01",
    ],
)
def test_a_malformed_traceparent_is_no_trace(hostile: object) -> None:
    assert tracing.trace_id_of(hostile) is None
    with tracing.span("work", traceparent=hostile, continues=True):
        current = tracing.current_traceparent()
    assert current is not None and tracing.trace_id_of(current) not in (None, TRACE)


def test_a_well_formed_traceparent_is_continued_by_a_child_span() -> None:
    assert tracing.trace_id_of(WELL_FORMED) == TRACE
    with tracing.span("work", traceparent=WELL_FORMED, continues=True):
        outer = tracing.current_traceparent()
        with tracing.span("call"):
            inner = tracing.current_traceparent()
    assert outer is not None and inner is not None
    assert tracing.trace_id_of(outer) == tracing.trace_id_of(inner) == TRACE
    assert len({WELL_FORMED, outer, inner}) == 3, "each span has an id of its own"
    assert tracing.current_traceparent() is None, "no span is current outside"


def test_log_lines_carry_the_current_spans_ids_and_none_outside_a_span() -> None:
    line: dict[str, Any] = {}
    assert tracing.add_trace_ids(None, "info", line) == {}
    with tracing.span("work", traceparent=WELL_FORMED, continues=True):
        current = tracing.current_traceparent()
        tracing.add_trace_ids(None, "info", line)
    assert current is not None
    assert line == {"trace_id": TRACE, "span_id": current.split("-")[2]}


def test_an_events_traceparent_is_read_from_its_raw_headers() -> None:
    assert tracing.event_traceparent([("ce_id", b"1"), ("ce_traceparent", WELL_FORMED.encode())]) == WELL_FORMED
    assert tracing.event_traceparent([("ce_traceparent", None)]) is None
    assert tracing.event_traceparent(None) is None
    assert tracing.trace_id_of(tracing.event_traceparent([("ce_traceparent", b"\xff\xfe")])) is None
