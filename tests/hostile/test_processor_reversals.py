"""Money states never drift (security review, finding 17): a refund that fails after it had succeeded is
reversed once, and a refund made elsewhere is followed from pending to its final status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import stripe

from refundflow_processor.external_refunds import record_external_update
from refundflow_processor.payment_provider import ProviderRefund
from refundflow_shared.events import PaymentSucceeded, Product
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    ProcessorUnderTest,
    approval,
    deliver_webhook,
    payment_intent,
    running_processor,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def status_is(processor: ProcessorUnderTest, refund_id: str, status: str) -> None:
    async def reached() -> bool:
        return await processor.refund_status(refund_id) == status

    await eventually(reached, timeout=30)


async def staged_count(processor: ProcessorUnderTest, event_type: str, about: str, count: int) -> None:
    async def reached() -> bool:
        return len(await processor.staged(event_type, about=about)) >= count

    await eventually(reached, timeout=30)


async def test_a_refund_failing_after_success_is_reversed_once_and_totals_exclude_it(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, sandbox={"late_failure_seconds": 1.0}
    ) as processor:
        intent = payment_intent("late_failure_")  # succeeds, then fails: refund.failed + charge.refund.updated
        first = approval(intent, amount=2_500)
        await processor.publish(first)
        await status_is(processor, first.refund_id, "reversed")

        [reversed_] = await processor.staged("refund.reversed", about=first.refund_id)
        [made] = await processor.provider_refunds(intent)
        assert (reversed_["provider_refund_id"], reversed_["amount"]) == (made["id"], 2_500)
        assert reversed_["failure_reason"] == "expired_or_canceled_card"
        assert len(await processor.staged("refund.succeeded", about=first.refund_id)) == 1

        # The money did not reach the customer: the next refund's totals do not count the reversed one.
        second = approval(intent, amount=1_000).model_copy(update={"payment_id": first.payment_id})
        await processor.publish(second)
        await staged_count(processor, "payment.refunded", second.refund_id, 1)
        [totals] = await processor.staged("payment.refunded", about=second.refund_id)
        assert (totals["refunded_amount"], totals["remaining_amount"]) == (1_000, 9_000)
        assert len(await processor.staged("refund.reversed", about=first.refund_id)) == 1, "two webhooks, one reversal"


async def test_a_reversal_with_a_long_failure_reason_from_the_provider_is_recorded(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The provider's failure_reason is its text, of any length: quoted whole in the reversal's message, it made
    an event past the contract's 2,000 characters, so the webhook was answered 500 forever (and the scan flagged
    the payment on every run), and intake never learnt the money did not reach the customer."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix) as processor:
        intent = payment_intent()
        ours = approval(intent)
        await processor.publish(ours)
        await status_is(processor, ours.refund_id, "succeeded")
        [made] = await processor.provider_refunds(intent)

        failed = {**made, "status": "failed", "failure_reason": "card issuer says: " + "x" * 1_972}
        answer = await deliver_webhook(processor, "refund.failed", failed)

        assert answer.status_code == 200, answer.text
        assert await processor.refund_status(ours.refund_id) == "reversed"
        [reversed_] = await processor.staged("refund.reversed", about=ours.refund_id)
        assert reversed_["failure_reason"] == "unknown"
        assert reversed_["failure_message"].startswith("provider: the refund failed after it had succeeded (card")
        assert len(reversed_["failure_message"]) == 2_000


async def test_the_sync_job_finds_reversals_and_follows_external_refunds_until_final(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        webhooks=False,  # only the sync job can learn anything here
        sync_pending_after_seconds=0.5,
        sandbox={"pending_seconds": 3600},
    ) as processor:
        # Ours: succeeded, then failed at the provider.
        intent = payment_intent()
        ours = approval(intent)
        await processor.publish(ours)
        await status_is(processor, ours.refund_id, "succeeded")
        [made] = await processor.provider_refunds(intent)
        await processor.sandbox("POST", f"refunds/{made['id']}/fail")
        await status_is(processor, ours.refund_id, "reversed")
        assert len(await processor.staged("refund.reversed", about=ours.refund_id)) == 1

        # Made in the dashboard, pending: reported pending, then with each new status.
        elsewhere = payment_intent("pending_")
        paid = PaymentSucceeded(
            payment_id=f"pay_{uuid.uuid4().hex[:10]}",
            merchant_id="mer_test",
            amount=10_000,
            currency="EUR",
            customer_email="ada@example.com",
            provider_payment_id=elsewhere,
            paid_at=datetime.now(UTC),
            product=Product(id="prod", name="Pro", kind="one_time"),
        )
        await processor.publish(paid)
        dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
        settling = await dashboard.v1.refunds.create_async(params={"payment_intent": elsewhere, "amount": 1_200})
        failing = await dashboard.v1.refunds.create_async(params={"payment_intent": elsewhere, "amount": 300})
        for refund in (settling, failing):
            await staged_count(processor, "refund.external_detected", refund.id, 1)
        await processor.sandbox("POST", f"refunds/{settling.id}/settle")
        await processor.sandbox("POST", f"refunds/{failing.id}/fail")
        await staged_count(processor, "refund.external_detected", settling.id, 2)
        await staged_count(processor, "refund.external_detected", failing.id, 2)

        def statuses(events: list[dict[str, object]]) -> list[object]:
            return [(e["status"], e["amount"], e["payment_id"]) for e in events]

        assert statuses(await processor.staged("refund.external_detected", about=settling.id)) == [
            ("pending", 1_200, paid.payment_id),
            ("succeeded", 1_200, paid.payment_id),
        ]
        assert statuses(await processor.staged("refund.external_detected", about=failing.id)) == [
            ("pending", 300, paid.payment_id),
            ("failed", 300, paid.payment_id),
        ]

        # A report older than what is recorded (a webhook redelivered out of order, a scan listed before the last
        # change): nothing moves back, nothing is published, and the failed refund holds none of the payment.
        for older in ("pending", "succeeded"):
            async with processor.db.acquire() as conn, conn.transaction():
                assert not await record_external_update(conn, ProviderRefund(failing.id, older, 300, "EUR"))
        async with processor.db.acquire() as conn, conn.transaction():
            assert not await record_external_update(conn, ProviderRefund(settling.id, "pending", 1_200, "EUR"))
        assert len(await processor.staged("refund.external_detected", about=failing.id)) == 2
        assert len(await processor.staged("refund.external_detected", about=settling.id)) == 2
        assert (
            await processor.db.fetchval("SELECT status FROM external_refunds WHERE provider_refund_id = $1", failing.id)
            == "failed"
        )
