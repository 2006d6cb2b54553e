"""Every refund that moved a payment's money can be matched to the provider's: ours carry the provider's refund id,
refunds made outside Refundflow are listed on their payment, and a refund the provider made that intake no longer
holds (after a restore of intake's database) is still booked, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from refundflow_shared.events import (
    RefundExternalDetected,
    RefundFailed,
    RefundReversed,
    RefundSucceeded,
    dlq_topic,
    topic_for,
)
from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake
from tests.support.kafka_reader import dead_letter_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
PROCESSOR = "refundflow/processor"


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def shown(intake: IntakeUnderTest, merchant: Headers, path: str) -> dict[str, Any]:
    response = await intake.client.get(path, headers=merchant)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def approved(intake: IntakeUnderTest, merchant: Headers, payment_id: str, amount: int) -> dict[str, Any]:
    refund = await intake.refund(merchant, payment_id, amount=amount)
    response = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    assert response.json()["status"] == "processing", response.text
    return refund


def told(refund: dict[str, Any], merchant_id: str, provider_refund_id: str) -> dict[str, Any]:
    return {
        "refund_id": refund["id"],
        "payment_id": refund["payment_id"],
        "merchant_id": merchant_id,
        "customer_email": "ada@example.com",
        "amount": refund["amount"],
        "currency": refund["currency"],
        "provider_refund_id": provider_refund_id,
    }


async def test_a_refund_shows_the_provider_refund_it_became_in_the_api_and_on_its_page(
    intake: IntakeUnderTest,
) -> None:
    """refund.succeeded's provider refund id was dropped: nothing matched our refund to Stripe's."""
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    refund = await approved(intake, merchant, payment["id"], 4_000)
    provider_refund_id = f"re_{uuid.uuid4().hex[:12]}"
    assert (await shown(intake, merchant, f"/v1/refunds/{refund['id']}"))["provider_refund_id"] is None

    success = RefundSucceeded(**told(refund, merchant_id, provider_refund_id))
    await intake.handled(await intake.publish(success, source=PROCESSOR))

    assert (await shown(intake, merchant, f"/v1/refunds/{refund['id']}"))["provider_refund_id"] == provider_refund_id
    [listed] = (await shown(intake, merchant, f"/v1/refunds?payment_id={payment['id']}"))["data"]
    assert listed["provider_refund_id"] == provider_refund_id
    [on_payment] = (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["refunds"]
    assert on_payment["provider_refund_id"] == provider_refund_id
    page = await owner.page(f"/dashboard/refunds/{refund['id']}")
    assert page.status_code == 200 and f'Provider refund</dt><dd class="mono">{provider_refund_id}' in page.text

    # A failure told afterwards (the processor adopted it, failed since) reverses it and keeps the id.
    common = {k: v for k, v in told(refund, merchant_id, provider_refund_id).items() if k != "provider_refund_id"}
    failure = RefundFailed(**common, failure_reason="lost")
    await intake.handled(await intake.publish(failure, source=PROCESSOR))
    body = await shown(intake, merchant, f"/v1/refunds/{refund['id']}")
    assert (body["status"], body["provider_refund_id"]) == ("reversed", provider_refund_id)


async def test_a_reversal_records_the_provider_refund_it_names(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    refund = await approved(intake, merchant, payment["id"], 2_500)
    provider_refund_id = f"re_{uuid.uuid4().hex[:12]}"
    success = RefundSucceeded(**told(refund, merchant_id, provider_refund_id))
    reversal = RefundReversed(**told(refund, merchant_id, provider_refund_id), failure_reason="lost_or_stolen_card")
    await intake.handled(await intake.publish(success, source=PROCESSOR))
    # The success as intake recorded it before this change: no provider refund id kept.
    await intake.db.execute("UPDATE refunds SET provider_refund_id = NULL WHERE id = $1", refund["id"])
    await intake.handled(await intake.publish(reversal, source=PROCESSOR))

    body = await shown(intake, merchant, f"/v1/refunds/{refund['id']}")
    assert (body["status"], body["provider_refund_id"]) == ("reversed", provider_refund_id)


def found_at_the_provider(
    payment: dict[str, Any], merchant_id: str, provider_refund_id: str, status: str, amount: int
) -> RefundExternalDetected:
    return RefundExternalDetected(
        payment_id=payment["id"],
        merchant_id=merchant_id,
        amount=amount,
        currency=payment["currency"],
        provider_refund_id=provider_refund_id,
        provider_payment_id=payment["provider_payment_id"],
        status=status,
    )


async def test_a_refund_made_outside_refundflow_is_listed_on_its_payment_in_the_api_and_on_its_page(
    intake: IntakeUnderTest,
) -> None:
    """It moved the payment's refunded amount and the balance, but was listed nowhere: '€50 refunded' and no refund."""
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    made, dropped = f"re_dash_{uuid.uuid4().hex[:8]}", f"re_dash_{uuid.uuid4().hex[:8]}"
    await intake.handled(
        await intake.publish(found_at_the_provider(payment, merchant_id, made, "pending", 5_000)),
        await intake.publish(found_at_the_provider(payment, merchant_id, dropped, "failed", 700)),
    )
    await intake.handled(await intake.publish(found_at_the_provider(payment, merchant_id, made, "succeeded", 5_000)))

    body = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (body["refunded_amount"], body["refunds"]) == (5_000, [])
    listed = {e["provider_refund_id"]: e for e in body["external_refunds"]}
    assert {k: (e["amount"], e["currency"], e["status"]) for k, e in listed.items()} == {
        made: (5_000, "EUR", "succeeded"),
        dropped: (700, "EUR", "failed"),
    }
    assert all(e["detected_at"] for e in listed.values())
    page = await owner.page(f"/dashboard/payments/{payment['id']}")
    assert page.status_code == 200
    assert "Refunds made at the provider" in page.text
    assert made in page.text and "€50.00" in page.text and dropped in page.text


async def balance(intake: IntakeUnderTest, merchant: Headers) -> dict[str, int]:
    [line] = (await shown(intake, merchant, "/v1/balance"))["data"]
    return {k: v for k, v in line.items() if k != "currency"}


def lost(payment: dict[str, Any], merchant_id: str, amount: int) -> dict[str, Any]:
    """What the processor says of a refund of ``payment`` that intake does not hold (its database restored)."""
    refund_id = f"ref_{uuid.uuid4().hex}"
    refund = {"id": refund_id, "payment_id": payment["id"], "amount": amount, "currency": payment["currency"]}
    return told(refund, merchant_id, f"re_{uuid.uuid4().hex[:12]}")


async def test_a_success_of_a_refund_intake_no_longer_holds_is_booked_once_as_found_at_the_provider(
    intake: IntakeUnderTest,
) -> None:
    """After a restore of intake's database, refund.succeeded of a refund made since was dead-lettered
    (RefundNotFound), so the balance overstated what is available for good and no replay could help."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    success = RefundSucceeded(**lost(payment, merchant_id, 3_000))
    # Told twice (a redelivery, or the processor telling again): booked once.
    await intake.handled(*[await intake.publish(success, source=PROCESSOR) for _ in range(2)])

    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 3_000, "held": 0, "available": 7_000}
    body = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (body["refunded_amount"], body["refundable_amount"]) == (3_000, 7_000)
    [found] = body["external_refunds"]
    assert (found["provider_refund_id"], found["status"]) == (success.provider_refund_id, "succeeded")
    [alert] = await intake.staged("team_alert.raised", payment["id"])
    assert (alert["kind"], alert["refund_id"]) == ("unrecorded_refund_booked", success.refund_id)

    # The processor's sync reports the same provider refund later: nothing more is booked.
    detected = found_at_the_provider(payment, merchant_id, success.provider_refund_id, "succeeded", 3_000)
    await intake.handled(await intake.publish(detected))
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 3_000, "held": 0, "available": 7_000}
    assert (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["refunded_amount"] == 3_000

    # Reversed at the provider afterwards: given back, once.
    same = success.model_dump(include=set(RefundReversed.model_fields) - {"failure_reason"})
    reversal = RefundReversed(**same, failure_reason="expired_or_canceled_card")
    await intake.handled(*[await intake.publish(reversal, source=PROCESSOR) for _ in range(2)])
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
    assert (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["refunded_amount"] == 0


async def test_a_failure_of_a_refund_intake_no_longer_holds_is_acknowledged(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    common = {k: v for k, v in lost(payment, merchant_id, 2_000).items() if k != "provider_refund_id"}
    await intake.handled(await intake.publish(RefundFailed(**common, failure_reason="declined"), source=PROCESSOR))

    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
    body = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (body["refunded_amount"], body["external_refunds"]) == (0, [])


async def test_an_outcome_naming_an_unknown_payment_or_another_merchants_stays_dead_lettered(
    intake: IntakeUnderTest,
) -> None:
    merchant, other = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000)
    unknown_payment = {**payment, "id": f"pay_{uuid.uuid4().hex}"}
    dlq = dlq_topic(topic_for("refund.succeeded", intake.settings.topic_prefix))
    named = [(await intake.merchant_id(merchant), unknown_payment), (await intake.merchant_id(other), payment)]
    for merchant_id, of in named:
        sent = await intake.publish(RefundSucceeded(**lost(of, merchant_id, 1_000)), source=PROCESSOR)
        parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
        assert parked["dlq_error"].startswith("RefundNotFound"), parked["dlq_error"]
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
