"""The probe service as its own process, for crash tests: `python -m tests.support.run_probe relay|consume`.

Settings come from the environment (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX);
REFUNDFLOW_CRASH_AT names the point where the process SIGKILLs itself.
"""

from __future__ import annotations

import asyncio
import sys

from faststream.kafka import KafkaBroker

from refundflow_shared.database import create_pool
from refundflow_shared.outbox import OutboxRelay
from refundflow_shared.settings import ServiceSettings
from tests.support.probe_service import PROBE, start_probe


async def relay_once(settings: ServiceSettings) -> None:
    pool = await create_pool(settings.database_url, PROBE)
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=None)
    await broker.connect()
    try:
        await OutboxRelay(pool, broker, schema=PROBE, topic_prefix=settings.topic_prefix).relay_batch()
    finally:
        await broker.stop()
        await pool.close()


async def consume_forever(settings: ServiceSettings) -> None:
    runtime = await start_probe(settings, instance="subprocess")
    try:
        await asyncio.Event().wait()
    finally:
        await runtime.stop()


def main() -> None:
    settings = ServiceSettings(consumer_retry_base_seconds=0.05, outbox_poll_interval_seconds=0.2)
    asyncio.run(relay_once(settings) if sys.argv[1] == "relay" else consume_forever(settings))


if __name__ == "__main__":
    main()
