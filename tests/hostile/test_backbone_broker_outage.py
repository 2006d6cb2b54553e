"""The broker goes away (its process stopped) under a running service: the service stays ready, since what it is
asked over HTTP touches only PostgreSQL and the outbox keeps what it publishes, and says the broker is away, in a
line per check rather than the Kafka client's dozens a second.

The embedded Tansu broker is a child process, so these tests run one of their own rather than stop the shared one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from refundflow_devstack.local_kafka import LocalKafka
from refundflow_shared.http_service import health_router
from refundflow_shared.service_runtime import ServiceRuntime
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually, probe_settings, start_probe


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(port=free_port(), log_file=tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def runtime(postgres_url: str, own_broker: LocalKafka) -> AsyncIterator[ServiceRuntime]:
    settings = probe_settings(
        await create_database(postgres_url), own_broker.bootstrap_servers, f"t{uuid.uuid4().hex[:10]}."
    )
    runtime = await start_probe(settings)
    yield runtime
    own_broker.start()  # back, so the consumer and producer close as they would
    await runtime.stop()


async def test_readyz_stays_ready_while_the_broker_is_away_and_says_it_is_away(
    runtime: ServiceRuntime, own_broker: LocalKafka
) -> None:
    app = FastAPI()
    app.include_router(health_router(runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["broker_reachable"] is True

        own_broker.stop()

        async def broker_shown_away() -> bool:
            return (await client.get("/readyz")).json().get("broker_reachable") is False

        await eventually(broker_shown_away, timeout=30)
        started = time.monotonic()
        during = await client.get("/readyz")
        answered_in = time.monotonic() - started

    assert during.status_code == 200, during.text
    assert during.json() == {
        "status": "ready",
        "checks": {"database": True, "jobs": True},
        "broker_reachable": False,
    }
    assert answered_in < 0.5, "a probe does not wait for the broker"


async def test_a_broker_outage_is_logged_once_per_check_not_by_the_kafka_client_many_times_a_second(
    runtime: ServiceRuntime, own_broker: LocalKafka, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    own_broker.stop()
    await asyncio.sleep(12)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]

    ours = [line for line in lines if line["event"] == "broker_unavailable"]
    assert 1 <= len(ours) <= 3, "one line per check (every 5 s)"
    assert ours[0]["level"] == "warning"
    assert [line["event"] for line in lines if line["level"] in ("error", "critical")] == [], "the client is quiet"
    assert len(lines) < 20, [line["event"] for line in lines]
