"""A hostile ``ce_traceparent`` on an event never breaks anything: the good event is handled (not dead-lettered)
in a new trace. A well-formed one is continued: staged in a span, relayed through the outbox, handled in its trace.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from refundflow_shared import tracing
from refundflow_shared.events import Event, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.probe_service import eventually, probe_settings, refund_requested, stage_events, start_probe
from tests.support.raw_records import DeadLetters, RawRecord, produce, raw_headers

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Probe:
    settings: ServiceSettings
    runtime: ServiceRuntime
    dead: DeadLetters
    seen: dict[uuid.UUID, str | None] = field(default_factory=dict)  # event id -> traceparent its handler ran in

    async def handled(self, *events: Event) -> bool:
        return all(event.id in self.seen for event in events)


@pytest.fixture(scope="module")
async def probe(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Probe]:
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    seen: dict[uuid.UUID, str | None] = {}

    async def note_trace(event: Event) -> None:
        seen[event.id] = tracing.current_traceparent()

    runtime = await start_probe(settings, before_effect=note_trace)
    dead = DeadLetters(kafka_bootstrap, [dlq_topic(topic_for("refund.requested", settings.topic_prefix))])
    await dead.start()
    try:
        yield Probe(settings, runtime, dead, seen)
    finally:
        await dead.stop()
        await runtime.stop()


async def test_a_hostile_ce_traceparent_starts_a_new_trace_and_the_event_is_handled(probe: Probe) -> None:
    hostile = {
        "garbage": b"garbage",
        "empty": b"",
        "all-zero-trace": b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "version-ff": b"ff-" + INCOMING_TRACE.encode() + b"-b7ad6b7169203331-01",
        "upper-case": b"00-" + INCOMING_TRACE.upper().encode() + b"-B7AD6B7169203331-01",
        "ten-thousand-characters": b"00-" + INCOMING_TRACE.encode() + b"-b7ad6b7169203331-01" + b"x" * 10_000,
        "control-characters": b"00-\x00\n\r-01",
    }
    topic = topic_for("refund.requested", probe.settings.topic_prefix)
    events, records = [], []
    for _ in hostile.values():
        event = Event.wrap(refund_requested(f"pay_{uuid.uuid4().hex[:8]}"), source="refundflow/test", sequence=1)
        events.append(event)
    for event, value in zip(events, hostile.values(), strict=True):
        headers = [*raw_headers(event), (tracing.EVENT_HEADER, value)]
        records.append(RawRecord(topic, event.partition_key.encode(), headers, event.kafka_value()))
    await produce(probe.settings.kafka_bootstrap_servers, records)

    await eventually(lambda: probe.handled(*events), timeout=60)

    traces = [tracing.trace_id_of(probe.seen[event.id]) for event in events]
    assert None not in traces, "each was handled in a span of its own trace"
    assert len(set(traces)) == len(hostile), "each started a new trace"
    assert INCOMING_TRACE not in traces
    assert probe.dead.records == {}, "nothing was dead-lettered"


async def test_an_event_staged_in_a_span_is_handled_in_the_same_trace_after_the_outbox_relays_it(
    probe: Probe,
) -> None:
    incoming = f"00-{INCOMING_TRACE}-b7ad6b7169203331-01"
    with tracing.span("request", traceparent=incoming, continues=True):
        [staged] = await stage_events(probe.runtime.pool, [refund_requested(f"pay_{uuid.uuid4().hex[:8]}")])
    headers = await probe.runtime.pool.fetchval(
        "SELECT headers ->> 'ce_traceparent' FROM outbox WHERE event_id = $1", staged.id
    )
    assert tracing.trace_id_of(headers) == INCOMING_TRACE

    await eventually(lambda: probe.handled(staged), timeout=60)

    assert tracing.trace_id_of(probe.seen[staged.id]) == INCOMING_TRACE
    assert probe.seen[staged.id] != headers, "the handler runs in a span of its own, a child of the event's"
