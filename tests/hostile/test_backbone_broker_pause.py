"""The broker freezes mid-burst (SIGSTOP, as in a long GC pause or a VM stall) and comes back: nothing is lost,
nothing is handled twice, and no event is dead-lettered for it.

The embedded Tansu broker is a child process, so this test runs one of its own rather than freeze the shared one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from refundflow_devstack.local_kafka import LocalKafka
from refundflow_shared.events import dlq_topic, topic_for
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import read_topic
from tests.support.probe_service import eventually, probe_settings, refund_requested, stage_events, start_probe

PAUSE_SECONDS = 12  # past the consumer's 10 s session timeout: the group rebalances when the broker is back


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(port=free_port(), log_file=Path(tmp_path_factory.mktemp("paused")) / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.resume()
        broker.stop()


@pytest.mark.slow
async def test_a_broker_frozen_mid_burst_loses_and_doubles_nothing(postgres_url: str, own_broker: LocalKafka) -> None:
    settings = probe_settings(
        await create_database(postgres_url),
        own_broker.bootstrap_servers,
        f"t{uuid.uuid4().hex[:10]}.",
        outbox_park_after_attempts=1,  # a pause mistaken for a refused row would park (and lose) it at once
    )
    runtime = await start_probe(settings, effect_seconds=0.01)
    try:
        payments = [f"pay_{i}" for i in range(20)]
        before = await stage_events(runtime.pool, [refund_requested(p, n) for n in range(1, 11) for p in payments])

        async def handled(count: int) -> bool:
            return bool(await runtime.pool.fetchval("SELECT count(*) FROM effects") >= count)

        await eventually(lambda: handled(40))
        own_broker.pause()
        try:
            # The service keeps working meanwhile: new events are staged while nothing answers.
            during = await stage_events(runtime.pool, [refund_requested(p, n) for n in range(11, 16) for p in payments])
            await asyncio.sleep(PAUSE_SECONDS)
        finally:
            own_broker.resume()

        staged = before + during
        await eventually(lambda: handled(len(staged)), timeout=120)
        await asyncio.sleep(2)  # time for a duplicate effect to show

        rows = await runtime.pool.fetch("SELECT event_id, payment_id, sequence FROM effects ORDER BY id")
        assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in staged), "each event once, none lost"
        for payment in payments:
            assert [r["sequence"] for r in rows if r["payment_id"] == payment] == list(range(1, 16)), "in order"
        assert await runtime.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
        topic = dlq_topic(topic_for("refund.requested", settings.topic_prefix))
        assert await read_topic(settings.kafka_bootstrap_servers, topic, expected=0) == []
    finally:
        await runtime.stop()
