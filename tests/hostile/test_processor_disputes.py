"""A dispute read after a refund's approval stops the refund at the processor if it was not made yet: the customer
must not get the refund and the chargeback. One that may have been made is looked up at the provider first, and
never failed while it may exist."""

from __future__ import annotations

import pytest

from refundflow_shared.events import Event, PaymentDisputed, RefundApproved
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    STRIPE_KEY,
    ProcessorUnderTest,
    approval,
    payment_intent,
    running_processor,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def refused_once(processor: ProcessorUnderTest) -> None:
    async def refused() -> bool:
        return int((await processor.sandbox("GET", f"api_keys/{STRIPE_KEY}"))["refused_requests"]) >= 1

    await eventually(refused, timeout=30)


async def disputed(processor: ProcessorUnderTest, approved: RefundApproved) -> Event:
    """Billing reports a chargeback of the approved refund's payment; returns once the processor handled it."""
    dispute = await processor.publish(
        PaymentDisputed(
            payment_id=approved.payment_id, merchant_id=approved.merchant_id, dispute_id="dp_1", reason="fraudulent"
        )
    )

    async def handled() -> bool:
        return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", dispute.id))

    await eventually(handled, timeout=30)
    return dispute


async def test_a_refund_approved_before_a_dispute_is_not_made_after_it(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")  # calls are paused: the refund waits
        approved = approval(payment_intent())
        await processor.publish(approved)
        await refused_once(processor)
        await disputed(processor, approved)
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/restore")

        async def failed() -> bool:
            return await processor.refund_status(approved.refund_id) == "failed"

        await eventually(failed, timeout=30)
        [told] = await processor.staged("refund.failed", about=approved.refund_id)
        assert told["failure_reason"] == "payment_disputed"
        assert await processor.provider_refunds(approved.provider_payment_id) == []


async def test_a_refund_that_may_have_been_made_before_the_dispute_is_looked_up_not_failed(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    slow_retries = {"provider_retry_base_seconds": 3.0, "provider_retry_max_seconds": 3.0}
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, **{**PATIENT_CLIENT, **slow_retries}
    ) as processor:
        approved = approval(payment_intent("error500_after_create_"))  # made, then answered 500
        await processor.publish(approved)

        async def made() -> bool:
            return len(await processor.provider_refunds(approved.provider_payment_id)) == 1

        await eventually(made, timeout=30)
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")  # before the retry: calls pause
        await refused_once(processor)
        await disputed(processor, approved)
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/restore")

        async def succeeded() -> bool:
            return await processor.refund_status(approved.refund_id) == "succeeded"

        await eventually(succeeded, timeout=30)
        assert await processor.staged("refund.failed", about=approved.refund_id) == []
        assert len(await processor.provider_refunds(approved.provider_payment_id)) == 1
