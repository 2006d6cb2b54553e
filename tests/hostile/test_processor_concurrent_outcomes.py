"""Two refunds of one payment whose outcomes are recorded at the same moment (two processor instances, a
webhook and the sync job): ``payment.refunded`` tells the merchant the payment's totals after each refund,
so the later one must count the earlier one, and neither may deadlock the other."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.payment_provider import ProviderRefund
from refundflow_processor.provider_updates import apply_provider_update
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, approval, payment_intent, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _pending_at_provider(processor: ProcessorUnderTest, refund_id: str) -> str:
    """The provider refund id of ``refund_id``'s attempt, once the provider holds it pending."""

    async def pending() -> bool:
        return await processor.attempts(refund_id) == ["provider_pending"]

    await eventually(pending, timeout=30)
    provider_refund_id: str = await processor.db.fetchval(
        "SELECT provider_refund_id FROM refund_attempts WHERE refund_id = $1", refund_id
    )
    return provider_refund_id


async def _waits_for_a_lock(conn: asyncpg.Connection, pid: int) -> bool:
    state = await conn.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
    return bool(state == "Lock")


async def test_two_refunds_of_a_payment_succeeding_at_once_each_report_the_totals_after_them(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        webhooks=False,  # the test reports both outcomes itself, at the moment it chooses
        sync_interval_seconds=3600,
        sandbox={"pending_seconds": 3600},
    ) as processor:
        intent = payment_intent("pending_")
        first = approval(intent, amount=2_500)
        second = approval(intent, amount=1_000).model_copy(
            update={"payment_id": first.payment_id, "merchant_id": first.merchant_id}
        )
        await processor.publish(first)
        await processor.publish(second)
        first_at_provider = await _pending_at_provider(processor, first.refund_id)
        second_at_provider = await _pending_at_provider(processor, second.refund_id)
        policy = AttemptPolicy.from_settings(processor.settings)

        async def report(conn: asyncpg.Connection, provider_refund_id: str, amount: int) -> bool:
            succeeded = ProviderRefund(provider_refund_id, "succeeded", amount, "EUR")
            return await apply_provider_update(conn, succeeded, policy=policy, provider="stripe")

        async with (
            processor.db.acquire() as one,
            processor.db.acquire() as other,
            processor.db.acquire() as onlooker,
        ):
            first_txn, second_txn = one.transaction(), other.transaction()
            await first_txn.start()
            assert await report(one, first_at_provider, 2_500)  # recorded, not committed yet
            await second_txn.start()
            second_report = asyncio.create_task(report(other, second_at_provider, 1_000))
            pid = other.get_server_pid()

            async def waiting_or_done() -> bool:
                return second_report.done() or await _waits_for_a_lock(onlooker, pid)

            try:
                await eventually(waiting_or_done, timeout=10)
                assert not second_report.done(), "the second outcome waits for the first one's payment"
                # While it waits it holds none of its refund's rows: whoever holds the payment may take them.
                async with onlooker.transaction():
                    held = await onlooker.fetch(
                        "SELECT a.refund_id FROM refund_attempts a JOIN refunds r USING (refund_id)"
                        " WHERE a.refund_id = $1 FOR UPDATE OF a, r NOWAIT",
                        second.refund_id,
                    )
                assert len(held) == 1
                await first_txn.commit()
                assert await asyncio.wait_for(second_report, timeout=10)
                await second_txn.commit()
            finally:
                second_report.cancel()

        [after_first] = await processor.staged("payment.refunded", about=first.refund_id)
        [after_second] = await processor.staged("payment.refunded", about=second.refund_id)
        assert (after_first["refunded_amount"], after_first["remaining_amount"]) == (2_500, 7_500)
        assert (after_second["refunded_amount"], after_second["remaining_amount"]) == (3_500, 6_500)
        assert [await processor.refund_status(r.refund_id) for r in (first, second)] == ["succeeded", "succeeded"]
