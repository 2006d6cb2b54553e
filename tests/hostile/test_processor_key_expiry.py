"""A key past its lifetime is reconciled before any call, even one never counted as tried (security review,
finding 13): the processor dies after the provider made the refund, and comes back after the provider forgot
the key; or its database is restored and it reads the approval again after the provider forgot the key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually
from tests.support.processor_harness import approval, payment_intent, publish_event, running_processor
from tests.support.service_processes import ServiceProcess, service_env

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_key_the_provider_forgot_is_never_sent_again_after_a_crash(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    sandbox_port, processor_port = free_port(), free_port()
    env = service_env(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=topic_prefix,
        HTTP_PORT=str(processor_port),
        STRIPE_API_BASE=f"http://127.0.0.1:{sandbox_port}",
        STRIPE_API_KEY="sk_test_key_expiry",
        EXECUTOR_POLL_INTERVAL_SECONDS="0.2",
        PROVIDER_CALL_DEADLINE_SECONDS="2",
        EXECUTOR_LEASE_MARGIN_SECONDS="1",
    )
    health = f"http://127.0.0.1:{processor_port}/readyz"
    intent = payment_intent()
    approved = approval(intent)
    # The provider keeps idempotency keys for one second here (Stripe: 24 hours).
    sandbox = create_sandbox(SandboxSettings(port=sandbox_port, idempotency_ttl_seconds=1))
    async with serving(sandbox, sandbox_port) as sandbox_url:
        doomed = ServiceProcess(
            "processor-doomed",
            ["refundflow-processor"],
            {**env, "REFUNDFLOW_CRASH_AT": "processor.after_provider_answered"},
            tmp_path,
            health,
        )
        await asyncio.to_thread(doomed.wait_ready)
        await publish_event(kafka_bootstrap, topic_prefix, approved)
        assert await asyncio.to_thread(doomed.process.wait, 60) == -9, doomed.log_tail()
        doomed.stop()

        db = await asyncpg.connect(database_url, server_settings={"search_path": "processor"})
        try:
            # Down for longer than the key's lifetime; the attempt was never counted as tried.
            await db.execute(
                "UPDATE refund_attempts SET created_at = now() - interval '25 hours' WHERE refund_id = $1",
                approved.refund_id,
            )
            assert await db.fetchval("SELECT tries FROM refund_attempts WHERE refund_id = $1", approved.refund_id) == 0
            await asyncio.sleep(1.1)  # the sandbox's key lifetime: it has forgotten the key now
            restarted = ServiceProcess("processor", ["refundflow-processor"], env, tmp_path, health)
            try:
                await asyncio.to_thread(restarted.wait_ready)

                async def settled() -> bool:
                    status = await db.fetchval("SELECT status FROM refunds WHERE refund_id = $1", approved.refund_id)
                    return status in ("succeeded", "failed")

                await eventually(settled, timeout=60)
                status = await db.fetchval("SELECT status FROM refunds WHERE refund_id = $1", approved.refund_id)
            finally:
                restarted.stop()
        finally:
            await db.close()
        async with httpx.AsyncClient() as client:
            made = (await client.get(f"{sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": intent})).json()

    assert made["count"] == 1, "the forgotten key was sent again and refunded a second time"
    assert status == "succeeded", "reconciliation adopted the refund the first call made"


async def test_an_approval_read_again_after_a_database_restore_adopts_the_refund_it_made(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The README's restore runbook rewinds the processor to the backup's time: it reads an approval again whose
    refund rows the restore lost, after the provider forgot the key its first call used. The first attempt's key
    is dated from the approval, not from its new row: it is reconciled before any call, and the refund made
    before the restore is adopted."""
    intent = payment_intent()
    approved = approval(intent)
    # The provider keeps keys for one second here (Stripe: 24 hours), and the processor knows it. No scan runs
    # after the first (one at start): the sync job's part in a restore is the sync job's test.
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        webhooks=False,
        sandbox={"idempotency_ttl_seconds": 1},
        provider_key_lifetime_seconds=1,
        sync_interval_seconds=3600,
    ) as processor:
        event = await processor.publish(approved)

        async def settled() -> bool:
            return await processor.refund_status(approved.refund_id) in ("succeeded", "failed")

        await eventually(settled, timeout=60)
        [made] = await processor.provider_refunds(intent)
        await processor.restore_before(event, approved.refund_id)
        await asyncio.sleep(1.5)  # past the key's lifetime: the provider has forgotten it
        await processor.deliver_again(event)
        await eventually(settled, timeout=60)
        status = await processor.refund_status(approved.refund_id)
        adopted = await processor.db.fetchval(
            "SELECT provider_refund_id FROM refunds WHERE refund_id = $1", approved.refund_id
        )
        refunds = await processor.provider_refunds(intent)

    assert [r["id"] for r in refunds] == [made["id"]], "the approval read again refunded the customer a second time"
    assert (status, adopted) == ("succeeded", made["id"]), "reconciliation adopted the refund made before the restore"
