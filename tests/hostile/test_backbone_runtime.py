"""What the runtime promises beyond the happy path: durable publishing (review finding 10), and a readiness and a
liveness that fail when a background job died (25.8), so the process is restarted."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import ValidationError

from refundflow_shared.events import dlq_topic, topic_for
from refundflow_shared.http_service import health_router
from refundflow_shared.kafka_topics import ensure_topics
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.settings import ServiceSettings
from tests.conftest import create_database
from tests.support.probe_service import PROBE, eventually, probe_settings, start_probe


@pytest.fixture(scope="module")
async def runtime(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ServiceRuntime]:
    settings = probe_settings(
        await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.", topic_retention_days=3
    )
    runtime = await start_probe(settings, consume=False)
    yield runtime
    await runtime.stop()


async def test_the_producer_waits_for_every_in_sync_replica(runtime: ServiceRuntime) -> None:
    producer = runtime.broker.config.producer._producer.producer  # type: ignore[attr-defined]
    assert producer._sender._acks == -1, "acks=all"


async def test_topics_get_their_replication_min_in_sync_replicas_and_retention_from_settings(
    runtime: ServiceRuntime,
) -> None:
    topic = topic_for("refund.approved", runtime.settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=runtime.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    replicas = {len(p["replicas"]) for p in described["partitions"]}
    assert replicas == {runtime.settings.topic_replication_factor}
    configs = {name: value for name, value, *_ in response.resources[0][4]}
    assert configs["min.insync.replicas"] == str(runtime.settings.topic_min_insync_replicas)
    assert configs["retention.ms"] == str(3 * 86_400_000)


async def test_dead_letter_topics_keep_their_records_as_long_as_the_inboxes_remember(runtime: ServiceRuntime) -> None:
    # A dead letter lives only on its topic and can be replayed for INBOX_RETENTION_DAYS: the topic keeps it so long.
    topic = dlq_topic(topic_for("refund.approved", runtime.settings.topic_prefix))
    admin = AIOKafkaAdminClient(bootstrap_servers=runtime.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {name: value for name, value, *_ in response.resources[0][4]}
    assert configs["retention.ms"] == str(int(runtime.settings.inbox_retention_days * 86_400_000))


async def test_dead_letter_topics_an_older_version_created_are_raised_to_what_the_inboxes_remember_at_start(
    postgres_url: str, kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # An older version created the dead-letter topics with TOPIC_RETENTION_DAYS (7 days) or without retention.ms (the
    # broker's default: 7 days on Kafka); an operator made another keep its records forever. The new version's start
    # raises the first two to INBOX_RETENTION_DAYS, leaves the other, and keeps the topics' other settings.
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    requested, approved, failed = (
        dlq_topic(topic_for(t, settings.topic_prefix)) for t in ("refund.requested", "refund.approved", "refund.failed")
    )
    week = 7 * 86_400_000
    await ensure_topics(
        kafka_bootstrap, [requested], settings.topic_partitions, min_insync_replicas=1, retention_ms=week
    )
    await ensure_topics(kafka_bootstrap, [approved], settings.topic_partitions)
    await ensure_topics(kafka_bootstrap, [failed], settings.topic_partitions, retention_ms=-1)
    runtime = await start_probe(settings, consume=False)
    await runtime.stop()

    configs = await _topic_configs(kafka_bootstrap, [requested, approved, failed])
    inboxes = str(int(settings.inbox_retention_days * 86_400_000))
    assert [configs[t].get("retention.ms") for t in (requested, approved, failed)] == [inboxes, inboxes, "-1"]
    assert configs[requested]["min.insync.replicas"] == "1"
    raised = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if "dead_letter_retention_raised" in line
    ]
    assert {line["topic"]: line["previous_retention_ms"] for line in raised} == {requested: week, approved: None}


async def _topic_configs(bootstrap_servers: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    return {name: {key: value for key, value, *_ in entries} for _, _, _, name, entries in response.resources}


async def test_topics_of_unequal_partition_counts_are_reported_at_start(
    postgres_url: str, kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # An operator created refund.requested with 2 partitions; the service would create the rest with 3. A payment's
    # events then land at different partition numbers, and reach different instances: the service says so.
    settings = probe_settings(
        await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.", topic_partitions=3
    )
    requested = topic_for("refund.requested", settings.topic_prefix)
    alerts = topic_for("team_alert.raised", settings.topic_prefix)
    await ensure_topics(kafka_bootstrap, [requested], partitions=2)
    runtime = await start_probe(settings)
    await runtime.stop()

    def shown(topic: str) -> float | None:
        return REGISTRY.get_sample_value("refundflow_topic_partitions", {"service": PROBE, "topic": topic})

    assert (shown(requested), shown(alerts)) == (2, 3)
    [error] = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if "topic_partition_counts_differ" in line
    ]
    assert error["level"] == "error"
    assert error["partitions"] == {requested: 2, alerts: 3}


def test_durability_settings_default_to_one_local_broker_and_must_be_consistent() -> None:
    assert (ServiceSettings().topic_replication_factor, ServiceSettings().topic_min_insync_replicas) == (1, 1)
    assert ServiceSettings(topic_replication_factor=3, topic_min_insync_replicas=2)
    with pytest.raises(ValidationError, match="TOPIC_MIN_INSYNC_REPLICAS"):
        ServiceSettings(topic_replication_factor=1, topic_min_insync_replicas=2)


async def test_a_background_job_that_dies_fails_readyz_and_healthz_and_shows_down(runtime: ServiceRuntime) -> None:
    # /healthz is the liveness probe: failing, the orchestrator restarts the process, and the job with it.
    app = FastAPI()
    app.include_router(health_router(runtime))
    died = asyncio.Event()

    async def executor() -> None:
        await died.wait()
        raise RuntimeError("the provider answered something unheard of")

    def up() -> float | None:
        labels = {"service": PROBE, "worker": "refund_executor"}
        return REGISTRY.get_sample_value("refundflow_background_job_up", labels)

    runtime.run_in_background(executor(), "refund_executor")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": True, "jobs": True}
        alive = await client.get("/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        assert up() == 1

        died.set()
        await eventually(lambda: _has_dead_jobs(runtime))
        unready = await client.get("/readyz")
        dead = await client.get("/healthz")

    assert unready.status_code == 503
    assert unready.json()["checks"]["jobs"] is False
    assert unready.json()["dead_jobs"] == ["refund_executor"]
    assert dead.status_code == 503
    assert dead.json() == {"status": "dead", "dead_jobs": ["refund_executor"]}
    assert up() == 0


async def _has_dead_jobs(runtime: ServiceRuntime) -> bool:
    return bool(runtime.dead_jobs)
