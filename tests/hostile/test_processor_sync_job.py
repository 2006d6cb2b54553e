"""The sync job can never die (security review, finding 12): a payment the provider does not know is flagged
and retried later, and every other payment is still scanned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import stripe

from refundflow_shared.events import PaymentSucceeded, Product
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, payment_intent, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")


def paid(provider_payment_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id="mer_sync",
        amount=10_000,
        currency="EUR",
        customer_email="ada@example.com",
        provider_payment_id=provider_payment_id,
        paid_at=datetime.now(UTC),
        product=Product(id="prod", name="Pro", kind="one_time"),
    )


async def detected(processor: ProcessorUnderTest, provider_refund_id: str) -> None:
    async def found() -> bool:
        return bool(await processor.staged("refund.external_detected", about=provider_refund_id))

    await eventually(found, timeout=30)


async def test_a_payment_the_provider_does_not_know_is_flagged_and_the_others_are_still_scanned(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, webhooks=False) as processor:
        unknown = paid(payment_intent("missing_"))  # e.g. a mistyped pi_: Stripe answers resource_missing
        await processor.publish(unknown)

        async def flagged() -> bool:
            row = await processor.db.fetchrow(
                "SELECT sync_error, sync_failures FROM payments WHERE payment_id = $1", unknown.payment_id
            )
            return row is not None and row["sync_failures"] >= 1

        await eventually(flagged, timeout=30)
        error = await processor.db.fetchval("SELECT sync_error FROM payments WHERE payment_id = $1", unknown.payment_id)
        assert "resource_missing" in error

        dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
        for _ in range(2):  # one scan after the other: the job lives on
            known = paid(payment_intent())
            await processor.publish(known)
            made = await dashboard.v1.refunds.create_async(
                params={"payment_intent": known.provider_payment_id, "amount": 1_000}
            )
            await detected(processor, made.id)
        failures = await processor.db.fetchval(
            "SELECT sync_failures FROM payments WHERE payment_id = $1", unknown.payment_id
        )
        assert failures >= 1
        never_synced = await processor.db.fetchval(
            "SELECT last_synced_at = '-infinity' FROM payments WHERE payment_id = $1", unknown.payment_id
        )
        assert never_synced, "a payment is marked scanned only once it was"
