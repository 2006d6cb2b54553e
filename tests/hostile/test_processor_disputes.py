"""A dispute read after a refund's approval stops the refund at the processor if it was not made yet: the customer
must not get the refund and the chargeback. One that may have been made is looked up at the provider first, and
never failed while it may exist."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from refundflow_shared.events import Event, EventData, PaymentDisputed, PaymentSucceeded, Product, RefundApproved
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


async def handled(processor: ProcessorUnderTest, data: EventData) -> Event:
    """Publish ``data``; returns once the processor handled it."""
    event = await processor.publish(data)

    async def in_inbox() -> bool:
        return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id))

    await eventually(in_inbox, timeout=30)
    return event


async def disputed(processor: ProcessorUnderTest, approved: RefundApproved) -> Event:
    """Billing reports a chargeback of the approved refund's payment; returns once the processor handled it."""
    return await handled(
        processor,
        PaymentDisputed(
            payment_id=approved.payment_id, merchant_id=approved.merchant_id, dispute_id="dp_1", reason="fraudulent"
        ),
    )


def paid(approved: RefundApproved, payment_id: str) -> PaymentSucceeded:
    """payment.succeeded for the approved refund's payment, under ``payment_id``."""
    return PaymentSucceeded(
        payment_id=payment_id, merchant_id=approved.merchant_id, customer_email=approved.customer_email,
        amount=approved.payment_amount, currency=approved.currency, provider_payment_id=approved.provider_payment_id,
        paid_at=datetime.now(UTC), product=Product(id="prod", name="Pro", kind="one_time"),
    )  # fmt: skip


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


@pytest.mark.parametrize("dispute_first", [False, True], ids=["payment_then_dispute", "dispute_then_payment"])
async def test_a_dispute_under_billings_own_id_stops_a_refund_of_the_payment_registered_under_ours(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, dispute_first: bool
) -> None:
    """The platform registered the payment with intake, which gave it its own id; billing reports it, and disputes
    it, under billing's: the processor dropped billing's payment.succeeded (its provider payment was known), so the
    dispute matched nothing and the refund was made."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/revoke")  # calls are paused: the refund waits
        approved = approval(payment_intent())
        await handled(processor, paid(approved, approved.payment_id))  # intake's, on POST /v1/payments
        await processor.publish(approved)
        await refused_once(processor)
        billing_id = f"bill_{uuid.uuid4().hex[:8]}"
        by_billing = paid(approved, billing_id)
        dispute = PaymentDisputed(payment_id=billing_id, merchant_id=approved.merchant_id, dispute_id="dp_2")
        for data in (dispute, by_billing) if dispute_first else (by_billing, dispute):
            await handled(processor, data)
        await processor.sandbox("POST", f"api_keys/{STRIPE_KEY}/restore")

        async def failed() -> bool:
            return await processor.refund_status(approved.refund_id) == "failed"

        await eventually(failed, timeout=30)
        [told] = await processor.staged("refund.failed", about=approved.refund_id)
        assert told["failure_reason"] == "payment_disputed"
        assert await processor.provider_refunds(approved.provider_payment_id) == []
