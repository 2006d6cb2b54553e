"""Two refunds of one payment whose outcomes are recorded at the same moment (two processor instances, a
webhook and the sync job): ``payment.refunded`` tells the merchant the payment's totals after each refund,
so the later one must count the earlier one. Payments are locked before their refunds' rows, and several in payment
order, so that nothing waits in a circle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from refundflow_processor import payment_repository
from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.event_handlers import lock_the_batchs_payments, remember_paid
from refundflow_processor.payment_provider import ProviderRefund
from refundflow_processor.provider_updates import apply_provider_update
from refundflow_processor.records import Payment
from refundflow_processor.refund_acceptance import accept_approved_refund
from refundflow_shared.events import Event, PaymentSucceeded, Product
from tests.conftest import create_database
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, approval, payment_intent, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    async with running_processor(
        await create_database(postgres_url),
        kafka_bootstrap,
        "tconc.",
        webhooks=False,  # the tests report outcomes themselves, at the moment they choose
        sync_interval_seconds=3600,
        sandbox={"pending_seconds": 3600},
    ) as running:
        yield running


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
    processor: ProcessorUnderTest,
) -> None:
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


async def test_a_batch_locks_its_payments_in_payment_order_before_its_handlers_run(
    processor: ProcessorUnderTest,
) -> None:
    # The executor writes a group of outcomes locking their payments in payment order. A batch whose events name
    # the same payments in another order must not hold a later one while it waits for an earlier one.
    run = uuid.uuid4().hex[:10]
    # In code point order (the executor's), "B" comes before "a"; in most locales' collations, after.
    earlier, later = f"pay_order_{run}_B", f"pay_order_{run}_a"
    async with processor.db.acquire() as conn:
        for payment_id in (earlier, later):
            payment = Payment(payment_id, "mer_test", f"pi_{payment_id}", 10_000, "EUR")
            await payment_repository.remember_payment(conn, payment, trusted=True)
    batch = [
        Event.wrap(approval(f"pi_{payment_id}").model_copy(update={"payment_id": payment_id}), source="t", sequence=1)
        for payment_id in (later, earlier)  # the later payment's event first
    ]

    async with (
        processor.db.acquire() as holder,
        processor.db.acquire() as consumer,
        processor.db.acquire() as onlooker,
    ):
        async with holder.transaction():
            await payment_repository.lock_payment(holder, earlier)  # as an outcome being written holds it
            consumer_txn = consumer.transaction()
            await consumer_txn.start()
            locking = asyncio.create_task(lock_the_batchs_payments(consumer, batch))
            try:
                pid = consumer.get_server_pid()
                await eventually(lambda: _waits_for_a_lock(onlooker, pid), timeout=10)
                async with onlooker.transaction():  # the later payment is free while the batch waits
                    assert await onlooker.fetch(
                        "SELECT payment_id FROM payments WHERE payment_id = $1 FOR UPDATE NOWAIT", later
                    )
            finally:
                locking.cancel()
        await asyncio.gather(locking, return_exceptions=True)
        await consumer_txn.rollback()


async def test_a_payment_changed_earlier_in_a_batch_is_read_again_by_the_batchs_approvals(
    processor: ProcessorUnderTest,
) -> None:
    # An approval that came before its payment taught the processor the payment as it claimed (10,000). Then one
    # batch holds billing's payment.succeeded (5,000) and a second approval: the latter is capped by billing's word.
    intent = payment_intent()
    first = approval(intent, amount=2_500)  # it claims a payment of 10,000
    second = approval(intent, amount=3_000).model_copy(
        update={"payment_id": first.payment_id, "merchant_id": first.merchant_id}
    )
    paid = PaymentSucceeded(
        payment_id=first.payment_id,
        merchant_id=first.merchant_id,
        customer_email=first.customer_email,
        amount=5_000,
        currency=first.currency,
        provider_payment_id=intent,
        paid_at=datetime(2026, 11, 1, tzinfo=UTC),
        product=Product(id="prod_1", name="Plan", kind="one_time"),
    )
    batch = [Event.wrap(data, source="t", sequence=1) for data in (paid, second)]
    async with processor.db.acquire() as conn:
        txn = conn.transaction()
        await txn.start()
        try:  # rolled back at the end: the executor never sees these refunds
            assert await accept_approved_refund(conn, first, None, approved_at=datetime.now(UTC))
            locked = await lock_the_batchs_payments(conn, batch)
            assert locked[first.payment_id].amount == 10_000
            await remember_paid(conn, paid, locked)
            assert await accept_approved_refund(
                conn, second, locked.get(second.payment_id), approved_at=datetime.now(UTC)
            )
            refused = await conn.fetchrow(
                "SELECT status, failure_reason FROM refunds WHERE refund_id = $1", second.refund_id
            )
        finally:
            await txn.rollback()
    assert (refused["status"], refused["failure_reason"]) == ("failed", "exceeds_refundable")
