"""The processor is SIGKILLed at each dangerous point; after a restart every refund ends succeeded, once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from refundflow_shared.events import topic_for
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import headers_of, read_topic
from tests.support.probe_service import eventually
from tests.support.processor_harness import approval, payment_intent, publish_event
from tests.support.service_processes import ServiceProcess, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CRASH_POINTS = [
    "processor.before_provider_call",  # the attempt and its key are committed; the provider was not called
    "processor.after_provider_answered",  # the provider made the refund; nothing is recorded yet
    "processor.after_outcome_recorded",  # recorded with its events in the outbox; maybe not yet published
]


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
async def test_a_processor_killed_mid_refund_refunds_exactly_once_after_restart(
    crash_at: str, database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    sandbox_port, processor_port = free_port(), free_port()
    env = service_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=topic_prefix,
        HTTP_PORT=str(processor_port),
        STRIPE_API_BASE=f"http://127.0.0.1:{sandbox_port}",
        STRIPE_API_KEY="sk_test_crash",
        EXECUTOR_POLL_INTERVAL_SECONDS="0.2",
        OUTBOX_POLL_INTERVAL_SECONDS="0.2",
        # A killed executor's attempts are leased for the call deadline plus the margin: keep that short here.
        PROVIDER_CALL_DEADLINE_SECONDS="2",
        EXECUTOR_LEASE_MARGIN_SECONDS="1",
    )
    health = f"http://127.0.0.1:{processor_port}/readyz"
    intent = payment_intent()
    approved = approval(intent)
    async with serving(create_sandbox(SandboxSettings(port=sandbox_port)), sandbox_port) as sandbox_url:
        doomed = ServiceProcess(
            "processor-doomed", ["refundflow-processor"], {**env, "REFUNDFLOW_CRASH_AT": crash_at}, tmp_path, health
        )
        await asyncio.to_thread(doomed.wait_ready)
        await publish_event(kafka_bootstrap, topic_prefix, approved)
        assert await asyncio.to_thread(doomed.process.wait, 60) == -9, doomed.log_tail()
        doomed.stop()

        restarted = ServiceProcess("processor", ["refundflow-processor"], env, tmp_path, health)
        try:
            await asyncio.to_thread(restarted.wait_ready)
            db = await asyncpg.connect(database_url, server_settings={"search_path": "processor"})
            try:

                async def succeeded() -> bool:
                    status = await db.fetchval("SELECT status FROM refunds WHERE refund_id = $1", approved.refund_id)
                    return bool(status == "succeeded")

                await eventually(succeeded, timeout=60)
            finally:
                await db.close()
            records = await read_topic(kafka_bootstrap, topic_for("refund.succeeded", topic_prefix), expected=1)
        finally:
            restarted.stop()
        async with httpx.AsyncClient() as client:
            at_provider = (
                await client.get(f"{sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": intent})
            ).json()

    assert at_provider["count"] == 1, "exactly one refund at the provider"
    assert {headers_of(r)["ce_id"] for r in records if json.loads(r.value or b"")["refund_id"] == approved.refund_id}
    assert len({headers_of(r)["ce_id"] for r in records}) == 1, "one refund.succeeded event (maybe delivered twice)"
