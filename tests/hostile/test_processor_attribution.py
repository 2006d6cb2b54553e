"""The processor moves money only for a payment it can prove (security review, findings 1 and 3): an approval
must name the provider payment learnt from payment.succeeded, in its currency, within what is left; a refund
found at the provider is booked only against the one payment that owns it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from refundflow_shared.events import PaymentSucceeded, Product, RefundApproved
from tests.conftest import create_database
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, approval, payment_intent, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    async with running_processor(await create_database(postgres_url), kafka_bootstrap, "tattr.") as running:
        yield running


async def paid(
    processor: ProcessorUnderTest, provider_payment_id: str, merchant_id: str, currency: str = "EUR"
) -> PaymentSucceeded:
    payment = PaymentSucceeded(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id=merchant_id,
        amount=10_000,
        currency=currency,
        customer_email="ada@example.com",
        provider_payment_id=provider_payment_id,
        paid_at=datetime.now(UTC),
        product=Product(id="prod", name="Pro", kind="one_time"),
    )
    event = await processor.publish(payment)

    async def handled() -> bool:
        return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id))

    await eventually(handled, timeout=30)
    return payment


def refund_of(payment: PaymentSucceeded, amount: int = 2_500) -> RefundApproved:
    return approval(payment.provider_payment_id, amount=amount, currency=payment.currency).model_copy(
        update={"payment_id": payment.payment_id, "merchant_id": payment.merchant_id}
    )


async def refused(processor: ProcessorUnderTest, approved: RefundApproved, reason: str) -> dict[str, Any]:
    """The approval is failed before any call and the team alerted; the alert's details are returned."""
    await processor.publish(approved)

    async def failed() -> bool:
        return await processor.refund_status(approved.refund_id) == "failed"

    await eventually(failed, timeout=30)
    [failure] = await processor.staged("refund.failed", about=approved.refund_id)
    assert failure["failure_reason"] == reason
    [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
    assert (alert["kind"], alert["merchant_id"]) == (reason, approved.merchant_id)
    assert await processor.attempts(approved.refund_id) == [], "the provider was never called"
    made = await processor.provider_refunds(approved.provider_payment_id)
    assert [r for r in made if r["metadata"].get("refund_id") == approved.refund_id] == []
    details: dict[str, Any] = alert["details"]
    return details


async def test_a_merchant_cannot_refund_another_merchants_provider_payment(processor: ProcessorUnderTest) -> None:
    victim = await paid(processor, payment_intent(), "mer_victim")
    # The attacker registered its own payment with the victim's provider payment id; that claim is refused...
    attacker = await paid(processor, victim.provider_payment_id, "mer_attacker")
    # ...and so is the refund it approves on it.
    await refused(processor, refund_of(attacker), "provider_payment_mismatch")

    # A refund made on the provider payment is booked against its owner only.
    dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
    made = await dashboard.v1.refunds.create_async(
        params={"payment_intent": victim.provider_payment_id, "amount": 1_000}
    )

    async def detected() -> bool:
        return bool(await processor.staged("refund.external_detected", about=made.id))

    await eventually(detected, timeout=30)
    [booked] = await processor.staged("refund.external_detected", about=made.id)
    assert (booked["payment_id"], booked["merchant_id"]) == (victim.payment_id, "mer_victim")


async def test_an_approval_must_name_the_provider_payment_learnt_for_its_payment(
    processor: ProcessorUnderTest,
) -> None:
    payment = await paid(processor, payment_intent(), "mer_honest")
    another = refund_of(payment).model_copy(update={"provider_payment_id": payment_intent()})
    await refused(processor, another, "provider_payment_mismatch")


async def test_an_approval_in_another_currency_than_the_payment_is_refused(processor: ProcessorUnderTest) -> None:
    payment = await paid(processor, payment_intent(), "mer_currency")
    details = await refused(processor, refund_of(payment).model_copy(update={"currency": "USD"}), "currency_mismatch")
    assert details["amount"] == "$25.00", "as people read amounts, not 2500 beside a code"


async def test_refunds_of_a_payment_can_never_exceed_what_was_paid(processor: ProcessorUnderTest) -> None:
    payment = await paid(processor, payment_intent(), "mer_cap")
    first = refund_of(payment, amount=6_000)
    await processor.publish(first)

    async def succeeded() -> bool:
        return await processor.refund_status(first.refund_id) == "succeeded"

    await eventually(succeeded, timeout=30)
    details = await refused(processor, refund_of(payment, amount=4_001), "exceeds_refundable")
    assert details["amount"] == "€40.01"
    assert details["reason"] == "€40.01 would bring the payment's refunds to €100.01 of €100.00"
    assert len(await processor.provider_refunds(payment.provider_payment_id)) == 1


async def test_a_refund_found_in_another_currency_is_alerted_and_not_booked(processor: ProcessorUnderTest) -> None:
    payment = await paid(processor, payment_intent(), "mer_fx")
    dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
    made = await dashboard.v1.refunds.create_async(
        params={"payment_intent": payment.provider_payment_id, "amount": 1_000, "currency": "usd"}
    )

    async def alerted() -> bool:
        return bool(await processor.staged("team_alert.raised", about=payment.payment_id))

    await eventually(alerted, timeout=30)
    [alert] = await processor.staged("team_alert.raised", about=payment.payment_id)
    assert (alert["kind"], alert["details"]["provider_refund_id"]) == ("external_refund_unattributed", made.id)
    assert await processor.staged("refund.external_detected", about=made.id) == []
