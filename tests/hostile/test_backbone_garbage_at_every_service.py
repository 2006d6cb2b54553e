"""Generated garbage thrown at every service's real consumer: none of it stops consumption.

Intake, the processor and the notifier run as their apps do (``create_app`` and its lifespan) on the real broker and
PostgreSQL. Hypothesis writes records no decoder could accept (bodies and headers, alone or together); each lands
in its ``.dlq`` with a reason from that service, and a good event written behind them is still handled.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.app import create_app as create_notifier
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor.app import create_app as create_processor
from refundflow_processor.settings import ProcessorSettings
from refundflow_shared.event_decoding import REQUIRED_ATTRIBUTES
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    Event,
    EventData,
    PaymentDisputed,
    PaymentRefunded,
    PaymentSucceeded,
    Product,
    dlq_topic,
    topic_for,
)
from tests.conftest import create_database
from tests.support.probe_service import eventually
from tests.support.raw_records import TAG, DeadLetters, RawHeaders, RawRecord, produce, raw_headers

MAX_EVENT_BYTES = 32 * 1024
Good = Callable[[str], EventData]


def payment_disputed(payment_id: str) -> EventData:
    return PaymentDisputed(payment_id=payment_id, merchant_id="mer_garbage", dispute_id="dp_1")


def payment_succeeded(payment_id: str) -> EventData:
    return PaymentSucceeded(
        payment_id=payment_id,
        merchant_id="mer_garbage",
        amount=1000,
        currency="EUR",
        customer_email="c@example.com",
        provider_payment_id=f"pi_{payment_id}",
        paid_at=datetime.now(UTC),
        product=Product(id="prod_1", name="Plan", kind="one_time"),
    )


def payment_refunded(payment_id: str) -> EventData:
    return PaymentRefunded(
        payment_id=payment_id,
        merchant_id="mer_garbage",
        refund_id=f"ref_{payment_id}",
        amount=100,
        currency="EUR",
        refunded_amount=100,
        remaining_amount=900,
    )


@dataclass(frozen=True)
class Target:
    """A service under fire: a good event it handles, and more topics it consumes."""

    good: Good
    other_topics: tuple[str, ...]


TARGETS = {
    "intake": Target(payment_disputed, ("payment.succeeded", "refund.succeeded", "refund.failed", "refund.submit")),
    "processor": Target(payment_succeeded, ("refund.approved", "subscription.cancel_requested")),
    "notifier": Target(payment_refunded, ("refund.requested", "refund.approved", "webhook_endpoint.configured")),
}


@dataclass
class Stack:
    prefixes: dict[str, str]
    db: asyncpg.Pool
    kafka: str
    dead: DeadLetters


def service_settings(name: str, common: dict[str, Any]) -> Any:
    if name == "intake":
        return IntakeSettings(**common, refundflow_admin_token="garbage-admin-token")
    if name == "processor":
        return ProcessorSettings(
            **common,
            sync_interval_seconds=3600,
            stripe_api_key="sk_test_garbage",
            stripe_api_base="http://127.0.0.1:9",  # never called: garbage reaches no provider
            stripe_sandbox=True,
        )
    return NotifierSettings(**common)


def app_of(name: str, settings: Any) -> FastAPI:
    if name == "intake":
        return create_intake(settings)
    if name == "processor":
        return create_processor(settings)
    return create_notifier(settings)


@pytest.fixture(scope="module")
async def stack(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[Stack]:
    database_url = await create_database(postgres_url)
    prefixes = {name: f"t{uuid.uuid4().hex[:10]}." for name in TARGETS}
    async with AsyncExitStack() as running:
        lifespans = []
        for name, prefix in prefixes.items():
            common = {
                "database_url": database_url,
                "kafka_bootstrap_servers": kafka_bootstrap,
                "topic_prefix": prefix,
                "event_max_bytes": MAX_EVENT_BYTES,
                "consumer_retry_base_seconds": 0.05,
                "consumer_retry_max_seconds": 0.5,
            }
            app = app_of(name, service_settings(name, common))
            lifespans.append(app.router.lifespan_context(app))
        # Started together: each waits for its consumer group to form.
        started = await asyncio.gather(*(lifespan.__aenter__() for lifespan in lifespans), return_exceptions=True)
        for lifespan, outcome in zip(lifespans, started, strict=True):
            if not isinstance(outcome, BaseException):
                running.push_async_exit(lifespan)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        watched = [
            dlq_topic(topic_for(t, prefixes[name]))
            for name, target in TARGETS.items()
            for t in (target.good("p").event_type.value, *target.other_topics)
        ]
        dead = DeadLetters(kafka_bootstrap, watched)
        await dead.start()
        running.push_async_callback(dead.stop)
        db = await asyncpg.create_pool(database_url)
        assert db is not None
        running.push_async_callback(db.close)
        yield Stack(prefixes, db, kafka_bootstrap, dead)


# ---------------------------------------------------------------- garbage, undecodable by construction

_SEQUENCE = re.compile(r"[1-9][0-9]{0,18}")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_aware_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


# Bodies no event of any type could be read from.
garbage_bodies = st.one_of(
    st.none(),
    st.binary(max_size=200).map(lambda b: b"\x00" + b),
    st.integers(4301, 6000).map(lambda n: b'{"amount": ' + b"9" * n + b"}"),
    st.integers(2000, 12000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 4000).map(lambda n: json.dumps({"x": "a" * n}).encode()),
    st.dictionaries(st.text(min_size=1, max_size=12).map(lambda k: f"zz_{k}"), st.integers(), min_size=1).map(
        lambda d: json.dumps(d).encode()
    ),
    st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=10), st.none()).map(
        lambda v: json.dumps(v).encode()
    ),
)


def _set(headers: RawHeaders, name: str, value: bytes | None) -> RawHeaders:
    return [(k, v) for k, v in headers if k != name] + [(name, value)]


@st.composite
def broken_headers(draw: st.DrawFn, headers: RawHeaders) -> RawHeaders:
    """Headers with one defect that no decoder may accept."""
    names = [k for k, _ in headers]
    defect = draw(
        st.sampled_from(
            ["drop", "no_value", "not_utf8", "repeat", "sequence", "time", "id", "specversion", "type", "schema"]
        )
    )
    if defect == "drop":
        name = draw(st.sampled_from(REQUIRED_ATTRIBUTES))
        return [(k, v) for k, v in headers if k != name]
    if defect == "no_value":
        return _set(headers, draw(st.sampled_from(names)), None)
    if defect == "not_utf8":
        return _set(headers, draw(st.sampled_from(names)), b"\xff" + draw(st.binary(max_size=20)))
    if defect == "repeat":
        return [*headers, (draw(st.sampled_from(names)), draw(st.text(max_size=20)).encode())]
    if defect == "sequence":
        text = draw(st.one_of(st.sampled_from(["0", "-1", "01", "1.0", "", "9" * 19]), st.text(max_size=12)))
        return _set(headers, "ce_sequence", (text if not _SEQUENCE.fullmatch(text) else f"-{text}").encode())
    if defect == "time":
        text = draw(st.text(max_size=30).filter(lambda t: not _is_aware_time(t)))
        return _set(headers, "ce_time", text.encode())
    if defect == "id":
        return _set(headers, "ce_id", draw(st.text(max_size=40).filter(lambda t: not _is_uuid(t))).encode())
    if defect == "specversion":
        return _set(headers, "ce_specversion", draw(st.text(max_size=5).filter(lambda t: t != "1.0")).encode())
    if defect == "type":
        other = st.text(max_size=30).filter(lambda t: t not in EVENT_DATA_TYPES)
        current = (dict(headers).get("ce_type") or b"").decode()
        known = st.sampled_from(sorted(EVENT_DATA_TYPES)).filter(lambda t: t != current)
        return _set(headers, "ce_type", draw(st.one_of(other, known)).encode())
    return _set(headers, "ce_dataschema", draw(st.text(max_size=40).filter(lambda t: ":v1" not in t)).encode())


def headers_for(template: RawHeaders, event_type: str) -> RawHeaders:
    """The template's headers, as if it were an event of ``event_type``."""
    schema = EVENT_DATA_TYPES[event_type].dataschema()
    return _set(_set(template, "ce_type", event_type.encode()), "ce_dataschema", schema.encode())


@st.composite
def garbage(draw: st.DrawFn, target: Target) -> list[tuple[str, RawHeaders, bytes | None]]:
    """(event type of the topic, headers, body) records, each undecodable: broken headers, a body no event could
    be read from, or both. Records with the good event's type carry its (valid) body when only the headers break."""
    good = target.good("pay_template")
    template = raw_headers(Event.wrap(good, source="refundflow/garbage", sequence=1))
    records: list[tuple[str, RawHeaders, bytes | None]] = []
    for _ in range(draw(st.integers(2, 6))):
        event_type = draw(st.sampled_from([good.event_type.value, *target.other_topics]))
        headers = headers_for(template, event_type)
        defect = draw(st.sampled_from(["headers", "body", "both"]))
        if defect == "headers" and event_type == good.event_type.value:
            records.append((event_type, draw(broken_headers(headers)), good.model_dump_json().encode()))
        elif defect == "both":
            records.append((event_type, draw(broken_headers(headers)), draw(garbage_bodies)))
        else:
            records.append((event_type, headers, draw(garbage_bodies)))
    return records


@pytest.mark.parametrize("service", sorted(TARGETS))
@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
async def test_garbage_is_dead_lettered_with_a_reason_and_a_good_event_behind_it_is_handled(
    stack: Stack, service: str, data: st.DataObject
) -> None:
    target, prefix = TARGETS[service], stack.prefixes[service]
    records = data.draw(garbage(target))
    payment = f"pay_{uuid.uuid4().hex[:10]}"
    good = Event.wrap(target.good(payment), source="refundflow/garbage", sequence=1)
    tags = [uuid.uuid4().hex.encode() for _ in records]
    written = [
        RawRecord(topic_for(event_type, prefix), payment.encode(), [*headers, (TAG, tag)], body)
        for tag, (event_type, headers, body) in zip(tags, records, strict=True)
    ]
    written.append(RawRecord(topic_for(good.type, prefix), payment.encode(), raw_headers(good), good.kafka_value()))
    await produce(stack.kafka, written)

    async def handled() -> bool:
        return bool(await stack.db.fetchval(f"SELECT count(*) = 1 FROM {service}.inbox WHERE event_id = $1", good.id))

    await eventually(handled, timeout=60)
    dead = await stack.dead.wait_for(tags)
    for tag, headers in dead.items():
        assert headers["dlq_consumer"] == service, tag
        assert headers["dlq_reason"], tag
        assert headers["dlq_error"], tag
