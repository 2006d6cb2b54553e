"""What /metrics tells an operator when the backbone is in trouble: an outbox relay that cannot publish shows as
an unsent backlog whose age grows (the alert on it fires); a slow handler shows as consumer lag that drains once it
is through; the dead-letter series exist at 0 from the start, so the first dead letter is an increase."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest

from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import Event, topic_for
from refundflow_shared.metrics_endpoint import metrics_router
from refundflow_shared.service_runtime import ServiceRuntime
from tests.conftest import create_database
from tests.support.intake_harness import running_intake
from tests.support.metrics_scrape import Scrape, parse
from tests.support.probe_service import eventually, probe_settings, refund_requested, stage_events, start_probe


def _client(runtime: ServiceRuntime) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(metrics_router(runtime.refresh_metrics))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe")


async def _scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


async def test_an_outbox_relay_that_cannot_read_its_table_shows_as_a_growing_unsent_backlog(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    runtime = await start_probe(settings, consume=False)
    unsent = ("refundflow_outbox_unsent", frozenset({("service", "probe")}))
    oldest = ("refundflow_outbox_oldest_unsent_seconds", frozenset({("service", "probe")}))
    try:
        async with _client(runtime) as client:
            assert (await _scrape(client)).samples[unsent] == 0
            # A column only the relay reads goes (a botched migration): every claim fails; the relay retries (a
            # database error may pass) and publishes nothing. The backlog and its age are what show it.
            async with runtime.pool.acquire() as conn:
                await conn.execute("ALTER TABLE outbox RENAME COLUMN attempts TO attempts_gone")
            await stage_events(runtime.pool, [refund_requested(f"pay_{n}") for n in range(3)])
            first = await _scrape(client)

            async def older() -> bool:
                return (await _scrape(client)).samples[oldest] > first.samples[oldest]

            await eventually(older)
            later = await _scrape(client)
    finally:
        await runtime.stop()
    assert first.samples[unsent] == later.samples[unsent] == 3
    assert later.samples[oldest] > first.samples[oldest] > 0


async def test_a_slow_handler_shows_as_consumer_lag_per_partition_that_drains_once_it_is_through(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    # One record per batch: the handler holding the first keeps the rest waiting, unread.
    settings = probe_settings(
        await create_database(postgres_url), kafka_bootstrap, prefix, consumer_batch_max_records=1
    )
    held, release = asyncio.Event(), asyncio.Event()

    async def slow(_: Event) -> None:
        held.set()
        await release.wait()

    # The five are on the broker before the consumer starts, so its first fetch brings them all. The gauge reads
    # the end offset of the consumer's last fetch (no broker round trip on a scrape): had that fetch brought the
    # first alone, published before the rest, the gauge would show none behind while the handler holds it (CI).
    relay = await start_probe(settings, consume=False)
    try:
        # One payment: one key, one partition, in order.
        await stage_events(relay.pool, [refund_requested("pay_slow", n) for n in range(1, 6)])

        async def published() -> bool:
            return bool(await relay.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0)

        await eventually(published)
    finally:
        await relay.stop()
    topic = topic_for("refund.requested", prefix)
    handled = {"service": "probe", "event_type": "refund.requested", "outcome": "handled"}
    before = parse(generate_latest(REGISTRY).decode())
    runtime = await start_probe(settings, before_effect=slow)
    try:
        async with _client(runtime) as client:
            await asyncio.wait_for(held.wait(), timeout=60)

            async def lagging() -> bool:
                return (await _scrape(client)).value("refundflow_consumer_lag", service="probe", topic=topic) >= 1

            await eventually(lagging)
            during = await _scrape(client)
            release.set()

            async def drained() -> bool:
                scraped = await _scrape(client)
                done = scraped.value("refundflow_events_handled_total", **handled)
                return done - before.value("refundflow_events_handled_total", **handled) == 5 and (
                    scraped.value("refundflow_consumer_lag", service="probe", topic=topic) == 0
                )

            await eventually(drained)
            after = await _scrape(client)
    finally:
        release.set()
        await runtime.stop()
    shown = {
        dict(labels)["partition"]
        for (name, labels) in during.samples
        if name == "refundflow_consumer_lag" and ("topic", topic) in labels
    }
    assert shown and shown <= {str(p) for p in range(settings.topic_partitions)}, shown
    timed = {"service": "probe", "event_type": "refund.requested"}
    count = "refundflow_handler_seconds_count"
    assert after.value(count, **timed) - before.value(count, **timed) == 5
    assert after.value("refundflow_handler_seconds_sum", **timed) > before.value(
        "refundflow_handler_seconds_sum", **timed
    )


async def test_a_consumer_stalled_on_a_batch_shows_as_the_batch_age_growing_even_when_the_database_is_away(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    """The lag gauge cannot show a stall: the end offsets come with fetches, and the consumer fetches no more of a
    partition while a batch of it is held (a database outage waited out, a handler that hangs). The age of the
    batch in hand does, also when the scrape's own database query fails."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, prefix)
    held, release = asyncio.Event(), asyncio.Event()

    async def hang(_: Event) -> None:
        held.set()
        await release.wait()

    age = "refundflow_consumer_batch_age_seconds"
    runtime = await start_probe(settings, before_effect=hang)
    try:
        async with _client(runtime) as client:
            assert (await _scrape(client)).samples[(age, frozenset({("service", "probe")}))] == 0
            await stage_events(runtime.pool, [refund_requested("pay_stalled")])
            await asyncio.wait_for(held.wait(), timeout=60)
            async with runtime.pool.acquire() as conn:  # the scrape's outbox query fails, as in an outage
                await conn.execute("ALTER TABLE outbox RENAME TO outbox_away")
            first = (await _scrape(client)).value(age, service="probe")

            async def older() -> bool:
                return (await _scrape(client)).value(age, service="probe") >= first + 1

            await eventually(older)
            async with runtime.pool.acquire() as conn:
                await conn.execute("ALTER TABLE outbox_away RENAME TO outbox")
            release.set()

            async def idle() -> bool:
                return (await _scrape(client)).value(age, service="probe") == 0

            await eventually(idle)
    finally:
        release.set()
        await runtime.stop()
    assert first > 0


async def test_every_dead_letter_series_a_service_can_count_is_at_zero_before_its_first_dead_letter(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    """A counter's labelled series appeared at its first dead letter already at 1: increase() over 1, 1, 1 is 0, so
    the alert on dead letters missed the first of each topic and reason."""
    async with running_intake(postgres_url, kafka_bootstrap) as intake:
        response = await intake.client.get("/metrics")
        assert response.status_code == 200, response.text
        scraped = parse(response.text)
    prefix = intake.settings.topic_prefix
    series = {
        (dict(labels)["topic"], dict(labels)["reason"]): value
        for (name, labels), value in scraped.samples.items()
        if name == "refundflow_dlq_messages_total"
        and ("service", "intake") in labels
        and dict(labels)["topic"].startswith(prefix)
    }
    consumed = [topic_for(t, prefix) for t in INTAKE.consumes]
    for topic in consumed:
        for reason in ("malformed_headers", "validation_failed", "undecodable", "handler_error", "retries_exhausted"):
            assert series.get((topic, reason)) == 0, (topic, reason)
    submit = topic_for("refund.submit", prefix)
    for refusal in ("payment_not_found", "merchant_not_found", "invalid_reason", "invalid_text", "open_request_exists"):
        assert series.get((submit, refusal)) == 0, refusal
    assert set(series.values()) == {0}
    assert {topic for topic, _ in series} == set(consumed)
