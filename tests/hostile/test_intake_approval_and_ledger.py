"""Approval re-checks the payment under its lock and holds the money; outcomes, reversals and external refunds move
the ledger exactly once each, whatever is redelivered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest

from refundflow_intake import ledger
from refundflow_shared.events import (
    PaymentDisputed,
    PaymentSucceeded,
    Product,
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
from tests.support.portal_customers import Customer, link_for
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
PROCESSOR = "refundflow/processor"


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def balance(intake: IntakeUnderTest, merchant: Headers) -> dict[str, int]:
    [line] = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    return {k: v for k, v in line.items() if k != "currency"}


async def shown(intake: IntakeUnderTest, merchant: Headers, path: str) -> dict[str, Any]:
    body: dict[str, Any] = (await intake.client.get(path, headers=merchant)).json()
    return body


async def approved(intake: IntakeUnderTest, merchant: Headers, payment_id: str, amount: int) -> dict[str, Any]:
    refund = await intake.refund(merchant, payment_id, amount=amount)
    response = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    assert response.json()["status"] == "processing", response.text
    return refund


def outcome(
    kind: type[RefundSucceeded] | type[RefundFailed] | type[RefundReversed], refund: dict[str, Any], merchant_id: str
) -> Any:
    common: dict[str, Any] = {
        "refund_id": refund["id"],
        "payment_id": refund["payment_id"],
        "merchant_id": merchant_id,
        "customer_email": "ada@example.com",
        "amount": refund["amount"],
        "currency": refund["currency"],
    }
    if kind is RefundSucceeded:
        return RefundSucceeded(**common, provider_refund_id=f"re_{refund['id']}")
    if kind is RefundFailed:
        return RefundFailed(**common, failure_reason="insufficient_funds")
    return RefundReversed(**common, provider_refund_id=f"re_{refund['id']}", failure_reason="expired_or_canceled_card")


async def test_a_request_on_a_payment_disputed_since_cannot_be_approved(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    dispute = PaymentDisputed(
        payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant), dispute_id="dp_1"
    )
    await intake.handled(await intake.publish(dispute))

    response = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)

    assert response.status_code == 409 and response.json()["error"]["code"] == "payment_disputed"
    assert await intake.staged("refund.approved", payment["id"]) == []
    assert (await shown(intake, merchant, f"/v1/refunds/{refund['id']}"))["status"] == "pending"


async def test_a_dispute_counts_only_for_the_merchant_it_names(intake: IntakeUnderTest) -> None:
    """A dispute naming another merchant's payment blocked that merchant's refunds, and kept its own merchant's
    dispute of it from being recorded (one dispute per payment id)."""
    merchant, other = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(other)
    await intake.handled(
        await intake.publish(PaymentDisputed(payment_id=payment["id"], merchant_id=await intake.merchant_id(merchant))),
    )
    asked = await intake.client.post(
        "/v1/refunds/quote", headers=other, json={"payment_id": payment["id"], "reason": "requested_by_customer"}
    )
    assert asked.status_code == 200, asked.text

    await intake.handled(
        await intake.publish(PaymentDisputed(payment_id=payment["id"], merchant_id=await intake.merchant_id(other))),
    )
    refused = await intake.client.post(
        "/v1/refunds",
        headers={**other, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer"},
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "payment_disputed"


async def test_a_dispute_read_before_its_payment_still_blocks_its_refunds(intake: IntakeUnderTest) -> None:
    """Billing's two topics are read side by side: the dispute may come first, and the payment may wait behind it."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment_id = f"pay_billing_{uuid.uuid4().hex[:8]}"
    dispute = await intake.publish(PaymentDisputed(payment_id=payment_id, merchant_id=merchant_id, dispute_id="dp_9"))
    payment = await intake.publish(
        PaymentSucceeded(
            payment_id=payment_id, merchant_id=merchant_id, customer_email="grace@example.com", amount=1_500,
            currency="EUR", provider_payment_id=f"pi_{uuid.uuid4().hex}", paid_at=intake.clock(),
            product=Product(id="prod_1", name="Plan", kind="one_time"),
        )
    )  # fmt: skip
    await intake.handled(dispute, payment)

    refused = await intake.client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment_id, "reason": "requested_by_customer"},
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "payment_disputed"


async def refused_as_disputed(intake: IntakeUnderTest, merchant: Headers, payment_id: str) -> bool:
    asked = await intake.client.post(
        "/v1/refunds/quote", headers=merchant, json={"payment_id": payment_id, "reason": "requested_by_customer"}
    )
    assert asked.status_code in (200, 409), asked.text
    return asked.status_code == 409 and asked.json()["error"]["code"] == "payment_disputed"


async def test_a_dispute_naming_the_provider_payment_blocks_the_payment_registered_under_our_id(
    intake: IntakeUnderTest,
) -> None:
    """Billing names a payment by the provider's id; the platform registered it with intake, which gave it its own:
    the dispute was recorded under billing's id, which nothing read, and the payment stayed refundable."""
    merchant, other = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(merchant)
    provider_id = payment["provider_payment_id"]
    # Another merchant's dispute of the same provider payment still counts only for that merchant.
    await intake.handled(
        await intake.publish(PaymentDisputed(payment_id=provider_id, merchant_id=await intake.merchant_id(other))),
    )
    assert not await refused_as_disputed(intake, merchant, payment["id"])

    dispute = PaymentDisputed(payment_id=provider_id, merchant_id=await intake.merchant_id(merchant), dispute_id="dp_2")
    await intake.handled(await intake.publish(dispute))

    assert await refused_as_disputed(intake, merchant, payment["id"])
    assert (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["disputed"] is True
    [listed] = [p for p in (await shown(intake, merchant, "/v1/payments"))["data"] if p["id"] == payment["id"]]
    assert listed["disputed"] is True


async def test_a_dispute_naming_the_provider_payment_before_the_payment_still_blocks_it(
    intake: IntakeUnderTest,
) -> None:
    """The registration's own answer says so too: it said ``disputed: false`` while GET said true."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    provider_id = f"pi_{uuid.uuid4().hex}"
    dispute = await intake.publish(PaymentDisputed(payment_id=provider_id, merchant_id=merchant_id))
    await intake.handled(dispute)

    payment = await intake.payment(merchant, provider_payment_id=provider_id)

    assert payment["disputed"] is True
    assert (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["disputed"] is True
    assert await refused_as_disputed(intake, merchant, payment["id"])


async def test_a_dispute_whose_id_is_one_payments_id_and_anothers_provider_payment_blocks_both(
    intake: IntakeUnderTest,
) -> None:
    """The event names one id and does not say whose it is: the safe reading blocks every payment of the merchant
    it could mean (a refund of a disputed payment pays the customer twice; a blocked one waits for a person)."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    ambiguous = f"pi_{uuid.uuid4().hex}"
    by_billing = await intake.publish(
        PaymentSucceeded(
            payment_id=ambiguous, merchant_id=merchant_id, customer_email="grace@example.com", amount=1_500,
            currency="EUR", provider_payment_id=f"pi_{uuid.uuid4().hex}", paid_at=intake.clock(),
            product=Product(id="prod_1", name="Plan", kind="one_time"),
        )
    )  # fmt: skip
    await intake.handled(by_billing)
    registered = await intake.payment(merchant, provider_payment_id=ambiguous)

    await intake.handled(await intake.publish(PaymentDisputed(payment_id=ambiguous, merchant_id=merchant_id)))

    assert await refused_as_disputed(intake, merchant, ambiguous)
    assert await refused_as_disputed(intake, merchant, registered["id"])


def billings_word_for(payment: dict[str, Any], merchant_id: str, billing_id: str) -> PaymentSucceeded:
    """Billing's payment.succeeded for a payment the platform registered through the API: its own payment id."""
    return PaymentSucceeded(
        payment_id=billing_id, merchant_id=merchant_id, customer_email=payment["customer_email"],
        customer_name=payment["customer_name"], amount=payment["amount"], currency=payment["currency"],
        provider_payment_id=payment["provider_payment_id"], paid_at=payment["paid_at"],
        product=Product.model_validate(payment["product"]),
    )  # fmt: skip


@pytest.mark.parametrize("dispute_first", [False, True], ids=["payment_then_dispute", "dispute_then_payment"])
async def test_a_dispute_under_billings_own_id_blocks_the_payment_registered_through_the_api(
    intake: IntakeUnderTest, dispute_first: bool
) -> None:
    """Billing names the payment by its own id, which intake dropped (the provider payment was registered already,
    under ours): the dispute was recorded under billing's id, which nothing linked to ours, and the payment stayed
    refundable."""
    merchant, other = await intake.merchant(), await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant)
    pending = await intake.refund(merchant, payment["id"], amount=1_000)
    billing_id = f"bill_{uuid.uuid4().hex[:8]}"
    by_billing = billings_word_for(payment, merchant_id, billing_id)
    dispute = PaymentDisputed(payment_id=billing_id, merchant_id=merchant_id, dispute_id="dp_3")
    # Another merchant's dispute of billing's id counts only for that merchant.
    await intake.handled(
        await intake.publish(PaymentDisputed(payment_id=billing_id, merchant_id=await intake.merchant_id(other))),
    )
    first, second = (dispute, by_billing) if dispute_first else (by_billing, dispute)
    await intake.handled(await intake.publish(first))
    assert not await refused_as_disputed(intake, merchant, payment["id"])

    await intake.handled(await intake.publish(second))

    assert await refused_as_disputed(intake, merchant, payment["id"])
    refused = await intake.client.post(f"/v1/refunds/{pending['id']}/approve", headers=merchant)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "payment_disputed", refused.text
    assert (await shown(intake, merchant, f"/v1/payments/{payment['id']}"))["disputed"] is True


async def test_approval_cannot_take_what_an_external_refund_used_up_meanwhile(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000)
    refund = await intake.refund(merchant, payment["id"], amount=6_000)
    external = RefundExternalDetected(
        payment_id=payment["id"],
        merchant_id=await intake.merchant_id(merchant),
        amount=5_000,
        currency="EUR",
        provider_refund_id=f"re_dash_{uuid.uuid4().hex[:8]}",
        provider_payment_id=payment["provider_payment_id"],
        status="succeeded",
    )
    await intake.handled(await intake.publish(external))

    too_much = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    assert too_much.status_code == 422 and too_much.json()["error"]["code"] == "refund_exceeds_refundable"
    what_is_left = await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 5_000}
    )
    assert what_is_left.json()["status"] == "processing", what_is_left.text
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [5_000]


async def test_approval_holds_the_amount_success_makes_it_final_and_failure_releases_it(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
    first = await approved(intake, merchant, payment["id"], 3_000)
    second = await approved(intake, merchant, payment["id"], 2_000)
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 5_000, "available": 5_000}

    success, failure = outcome(RefundSucceeded, first, merchant_id), outcome(RefundFailed, second, merchant_id)
    events = [await intake.publish(e, source=PROCESSOR) for e in (success, failure, success, failure)]
    await intake.handled(*events)

    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 3_000, "held": 0, "available": 7_000}
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["refunded_amount"], paid["refundable_amount"]) == (3_000, 7_000)


async def test_a_reversed_refund_gives_back_the_payment_and_the_balance_once(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    refund = await approved(intake, merchant, payment["id"], 4_000)
    await intake.handled(await intake.publish(outcome(RefundSucceeded, refund, merchant_id), source=PROCESSOR))
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 4_000, "held": 0, "available": 6_000}

    reversal = outcome(RefundReversed, refund, merchant_id)
    await intake.handled(*[await intake.publish(reversal, source=PROCESSOR) for _ in range(2)])

    body = await shown(intake, merchant, f"/v1/refunds/{refund['id']}")
    assert body["status"] == "reversed"
    [entry] = [t for t in body["timeline"] if t["action"] == "reversed"]
    assert (entry["status"], entry["actor"]) == ("reversed", PROCESSOR)
    assert "expired_or_canceled_card" in entry["note"]
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["status"], paid["refunded_amount"], paid["refundable_amount"]) == ("paid", 0, 10_000)
    listed = await shown(intake, merchant, "/v1/refunds?status=reversed")
    assert [r["id"] for r in listed["data"]] == [refund["id"]]


async def test_a_reversal_read_just_before_its_success_still_reverses_the_refund(intake: IntakeUnderTest) -> None:
    """The processor's refund.reversed and refund.succeeded travel on two topics, one partition number: the reversal
    may be read first. It waited in its lane for the success, which that wait kept from being read, until it was
    dead-lettered: the refund stayed succeeded and the balance counted 1,000 refunded that the customer never got."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=4_999)
    refund = await approved(intake, merchant, payment["id"], 1_000)
    reversal = await intake.publish(outcome(RefundReversed, refund, merchant_id), source=PROCESSOR)
    await asyncio.sleep(0.3)
    success = await intake.publish(outcome(RefundSucceeded, refund, merchant_id), source=PROCESSOR)
    await intake.handled(success)
    await intake.handled(reversal)

    body = await shown(intake, merchant, f"/v1/refunds/{refund['id']}")
    assert body["status"] == "reversed"
    assert await balance(intake, merchant) == {"paid": 4_999, "refunded": 0, "held": 0, "available": 4_999}
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["refunded_amount"], paid["refundable_amount"]) == (0, 4_999)


async def test_a_failure_reported_for_a_refund_that_succeeded_reverses_it(intake: IntakeUnderTest) -> None:
    # After a processor restore, it adopts its refund, failed since: it cannot know we were told of its success.
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)
    refund = await approved(intake, merchant, payment["id"], 4_000)
    await intake.handled(await intake.publish(outcome(RefundSucceeded, refund, merchant_id), source=PROCESSOR))

    failures = [outcome(RefundFailed, refund, merchant_id) for _ in range(2)]  # told again: reversed once
    await intake.handled(*[await intake.publish(failure, source=PROCESSOR) for failure in failures])

    body = await shown(intake, merchant, f"/v1/refunds/{refund['id']}")
    assert (body["status"], body["failure_reason"]) == ("reversed", "insufficient_funds")
    assert [t["action"] for t in body["timeline"]][-1] == "reversed"
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["status"], paid["refunded_amount"], paid["refundable_amount"]) == ("paid", 0, 10_000)


async def test_a_reversal_of_a_refund_that_never_succeeded_is_dead_lettered(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    sent = await intake.publish(outcome(RefundReversed, refund, await intake.merchant_id(merchant)), source=PROCESSOR)

    dlq = dlq_topic(topic_for("refund.reversed", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert "pending" in parked["dlq_error"]
    assert (await shown(intake, merchant, f"/v1/refunds/{refund['id']}"))["status"] == "pending"


async def test_an_external_refund_follows_the_provider_from_pending_to_succeeded_to_failed_once_each(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)

    def detected(status: Literal["pending", "succeeded", "failed"], provider_refund_id: str, amount: int) -> Any:
        return RefundExternalDetected(
            payment_id=payment["id"],
            merchant_id=merchant_id,
            amount=amount,
            currency="EUR",
            provider_refund_id=provider_refund_id,
            provider_payment_id=payment["provider_payment_id"],
            status=status,
        )

    async def after(*events: Any) -> tuple[dict[str, int], tuple[int, int]]:
        await intake.handled(*[await intake.publish(e) for e in events])
        paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
        return await balance(intake, merchant), (paid["refunded_amount"], paid["refundable_amount"])

    first, second = f"re_dash_{uuid.uuid4().hex[:8]}", f"re_dash_{uuid.uuid4().hex[:8]}"
    assert await after(detected("pending", first, 2_000), detected("pending", first, 2_000)) == (
        {"paid": 10_000, "refunded": 0, "held": 2_000, "available": 8_000},
        (0, 8_000),
    )
    assert await after(detected("succeeded", first, 2_000), detected("succeeded", first, 2_000)) == (
        {"paid": 10_000, "refunded": 2_000, "held": 0, "available": 8_000},
        (2_000, 8_000),
    )
    assert await after(detected("pending", second, 1_000), detected("failed", second, 1_000)) == (
        {"paid": 10_000, "refunded": 2_000, "held": 0, "available": 8_000},
        (2_000, 8_000),
    )
    assert await after(detected("failed", first, 2_000), detected("failed", first, 2_000)) == (
        {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000},
        (0, 10_000),
    )
    # A report that goes backwards (failed, then pending or succeeded again) changes nothing.
    assert await after(detected("succeeded", first, 2_000), detected("pending", second, 1_000)) == (
        {"paid": 10_000, "refunded": 0, "held": 0, "available": 10_000},
        (0, 10_000),
    )


async def test_an_external_refund_past_the_payments_amount_is_recorded_as_the_provider_reports_it(
    intake: IntakeUnderTest,
) -> None:
    # The sync scan lists newest first: a new refund can come before an older one's move from succeeded to failed.
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    payment = await intake.payment(merchant, amount=10_000)

    def detected(status: Literal["pending", "succeeded", "failed"], provider_refund_id: str) -> Any:
        return RefundExternalDetected(
            payment_id=payment["id"],
            merchant_id=merchant_id,
            amount=10_000,
            currency="EUR",
            provider_refund_id=provider_refund_id,
            provider_payment_id=payment["provider_payment_id"],
            status=status,
        )

    older, newer = f"re_dash_{uuid.uuid4().hex[:8]}", f"re_dash_{uuid.uuid4().hex[:8]}"
    await intake.handled(await intake.publish(detected("succeeded", older)))
    await intake.handled(
        await intake.publish(detected("pending", newer)), await intake.publish(detected("succeeded", newer))
    )

    # Refunded twice over for a while: shown as it is, nothing left to ask for, every page still opens.
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["status"], paid["refunded_amount"], paid["refundable_amount"]) == ("refunded", 20_000, 0)
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 20_000, "held": 0, "available": -10_000}
    assert (await owner.page("/dashboard/payments")).status_code == 200
    assert (await owner.page("/dashboard/balance")).status_code == 200
    portal = await Customer(intake, f"/portal/{(await link_for(intake, merchant, payment['id']))['token']}").open()
    assert portal.status_code == 200, portal.text[:300]

    await intake.handled(await intake.publish(detected("failed", older)))
    paid = await shown(intake, merchant, f"/v1/payments/{payment['id']}")
    assert (paid["status"], paid["refunded_amount"], paid["refundable_amount"]) == ("refunded", 10_000, 0)
    assert await balance(intake, merchant) == {"paid": 10_000, "refunded": 10_000, "held": 0, "available": 0}


async def test_the_balance_totals_stay_the_sum_of_the_entries_whatever_comes_at_once(intake: IntakeUnderTest) -> None:
    """Payments, holds, successes, failures, reversals and external refunds written side by side, each told twice:
    the totals the balance reads are what the entries add up to."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payments = await asyncio.gather(*[intake.payment(merchant, amount=10_000) for _ in range(8)])
    refunds = await asyncio.gather(*[approved(intake, merchant, p["id"], 1_000 + i) for i, p in enumerate(payments)])
    outcomes: list[Any] = []
    for i, refund in enumerate(refunds[:6]):
        outcomes.append(outcome(RefundFailed if i % 3 == 0 else RefundSucceeded, refund, merchant_id))
    external = [
        RefundExternalDetected(
            payment_id=payment["id"],
            merchant_id=merchant_id,
            amount=500,
            currency="EUR",
            provider_refund_id=f"re_dash_{uuid.uuid4().hex[:8]}",
            provider_payment_id=payment["provider_payment_id"],
            status=status,
        )
        for payment, status in zip(payments, ("pending", "succeeded", "pending"), strict=False)
    ]
    sent = await asyncio.gather(*[intake.publish(e, source=PROCESSOR) for e in [*outcomes, *outcomes]])
    sent += await asyncio.gather(*[intake.publish(e) for e in [*external, *external]])
    await intake.handled(*sent)
    reversals = [outcome(RefundReversed, refunds[1], merchant_id), outcome(RefundFailed, refunds[2], merchant_id)]
    await intake.handled(*await asyncio.gather(*[intake.publish(e, source=PROCESSOR) for e in reversals * 2]))

    summed = await intake.db.fetchrow(
        "SELECT sum(amount) FILTER (WHERE kind = 'payment') AS paid,"
        " -sum(amount) FILTER (WHERE kind IN ('refund', 'refund_reversal', 'external_refund',"
        "  'external_refund_reversal')) AS refunded,"
        " -sum(amount) FILTER (WHERE kind IN ('refund_hold', 'refund_release', 'external_refund_hold',"
        "  'external_refund_release')) AS held,"
        " sum(amount) AS available FROM balance_entries WHERE merchant_id = $1",
        merchant_id,
    )
    assert await balance(intake, merchant) == dict(summed)
    # 8 paid; 6 approvals of 1,000 + i decided (2 failed, 4 succeeded, 2 of those reversed), 2 still held; the
    # external ones: one succeeded, two pending.
    assert dict(summed) == {
        "paid": 80_000,
        "refunded": 1_004 + 1_005 + 500,
        "held": 1_006 + 1_007 + 500 + 500,
        "available": 80_000 - (1_004 + 1_005 + 500) - (1_006 + 1_007 + 500 + 500),
    }


async def test_entries_written_side_by_side_add_to_their_totals_once(intake: IntakeUnderTest) -> None:
    """Writers racing on the same merchant's totals, and on the same entries (a redelivery handled on two
    connections at once): every entry written counts once, one skipped counts nothing."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    money: list[dict[str, Any]] = [
        {"merchant_id": merchant_id, "currency": c, "amount": 100 + i} for i, c in enumerate(["EUR", "USD"] * 20)
    ]
    entries = [("payment", f"pay_race_{i}", m) for i, m in enumerate(money)]

    async def write(batch: list[ledger.Entry]) -> None:
        async with intake.db.acquire() as conn, conn.transaction():
            await ledger.record_all(conn, batch)
            await asyncio.sleep(0.01)  # hold the transaction open a moment, as a consumer's batch does

    async def fold_meanwhile() -> None:
        for _ in range(20):
            async with intake.db.acquire() as conn, conn.transaction():
                await ledger.fold_totals(conn, batch=3)
            await asyncio.sleep(0.005)

    batches = [entries[i::5] for i in range(5)] + [entries[i::4] for i in range(4)]  # overlapping, in one order
    await asyncio.gather(fold_meanwhile(), *[write(batch) for batch in batches])

    summed = await intake.db.fetch(
        "SELECT currency, sum(amount) AS paid FROM balance_entries WHERE merchant_id = $1"
        " GROUP BY currency ORDER BY currency",
        merchant_id,
    )
    expected = [(r["currency"], r["paid"]) for r in summed]
    assert [paid for _, paid in expected] == [
        sum(m["amount"] for m in money[::2]),
        sum(m["amount"] for m in money[1::2]),
    ]
    assert await paid_by_currency(intake, merchant_id) == expected, "the totals and the deltas not folded yet"
    await fold_everything(intake)
    totals = await intake.db.fetch(
        "SELECT currency, paid FROM balance_totals WHERE merchant_id = $1 ORDER BY currency", merchant_id
    )
    assert [tuple(r) for r in totals] == expected, "every delta folded, once"
    assert await paid_by_currency(intake, merchant_id) == expected


async def paid_by_currency(intake: IntakeUnderTest, merchant_id: str) -> list[tuple[str, int]]:
    async with intake.db.acquire() as conn:
        return [(line["currency"], line["paid"]) for line in await ledger.balance(conn, merchant_id)]


async def fold_everything(intake: IntakeUnderTest) -> None:
    """Fold until no delta is left, the intake's own fold job's included (one it holds is skipped, not waited for)."""

    async def none_left() -> bool:
        async with intake.db.acquire() as conn:
            await ledger.fold_totals(conn)
            return not await conn.fetchval("SELECT count(*) FROM balance_total_deltas")

    await eventually(none_left, timeout=10)


async def test_two_transactions_writing_one_merchants_entries_do_not_wait_for_each_other(
    intake: IntakeUnderTest,
) -> None:
    """A consumer's batch holds its transaction open after writing a merchant's entries; another writing entries of
    the same merchant and currencies meanwhile commits without waiting for it (its lock_timeout refuses any wait)."""
    merchant_id = await intake.merchant_id(await intake.merchant())
    run = uuid.uuid4().hex[:8]

    def paid(i: int, currency: str) -> ledger.Entry:
        return ("payment", f"pay_open_{run}_{i}", {"merchant_id": merchant_id, "currency": currency, "amount": 100})

    async with intake.db.acquire() as conn:
        await ledger.record_all(conn, [paid(0, "EUR"), paid(1, "USD")])  # the merchant has totals before

    async with intake.db.acquire() as holding, holding.transaction():
        await ledger.record_all(holding, [paid(2, "EUR"), paid(3, "USD")])
        async with intake.db.acquire() as other:
            async with other.transaction():
                await other.execute("SET LOCAL lock_timeout = '1s'")
                await ledger.record_all(other, [paid(4, "EUR"), paid(5, "USD")])
            assert [(line["currency"], line["paid"]) for line in await ledger.balance(other, merchant_id)] == [
                ("EUR", 200),
                ("USD", 200),
            ], "the other's, committed; not the one still open"
    assert await paid_by_currency(intake, merchant_id) == [("EUR", 300), ("USD", 300)]

    async def folded_by_intakes_job() -> bool:
        left = await intake.db.fetchval("SELECT count(*) FROM balance_total_deltas WHERE merchant_id = $1", merchant_id)
        return bool(left == 0)

    await eventually(folded_by_intakes_job, timeout=10)
    assert await paid_by_currency(intake, merchant_id) == [("EUR", 300), ("USD", 300)]


async def test_folds_at_once_move_every_delta_once_and_the_balance_never_counts_one_twice(
    intake: IntakeUnderTest,
) -> None:
    """Two folds side by side, each holding its transaction a moment, while the balance is read over and over: each
    delta reaches the totals once, and every read (totals and deltas in one snapshot) shows the same balance."""
    merchant_id = await intake.merchant_id(await intake.merchant())
    amounts = {"EUR": [100 + i for i in range(0, 60, 2)], "USD": [100 + i for i in range(1, 60, 2)]}
    async with intake.db.acquire() as conn:
        for currency, listed in amounts.items():
            for i, amount in enumerate(listed):
                money = {"merchant_id": merchant_id, "currency": currency, "amount": amount}
                await ledger.record(conn, "payment", f"pay_fold_{uuid.uuid4().hex[:8]}_{i}", money)
    expected = [(currency, sum(listed)) for currency, listed in amounts.items()]
    folding = True
    seen: list[list[tuple[str, int]]] = []

    async def fold_slowly() -> None:
        while True:
            async with intake.db.acquire() as conn, conn.transaction():
                moved = await ledger.fold_totals(conn, batch=4)
                await asyncio.sleep(0.01)  # the other fold runs meanwhile, on other deltas, into the same totals
            if not moved:
                return

    async def read_meanwhile() -> None:
        while folding:
            seen.append(await paid_by_currency(intake, merchant_id))
            await asyncio.sleep(0)

    reading = asyncio.create_task(read_meanwhile())
    try:
        await asyncio.gather(fold_slowly(), fold_slowly())
    finally:
        folding = False
        await reading
    assert len(seen) > 5 and all(s == expected for s in seen), [s for s in seen if s != expected]

    await fold_everything(intake)
    async with intake.db.acquire() as conn:
        assert await ledger.fold_totals(conn) == 0, "nothing left to fold"
        totals = await conn.fetch(
            "SELECT currency, paid FROM balance_totals WHERE merchant_id = $1 ORDER BY currency", merchant_id
        )
    assert [tuple(r) for r in totals] == expected
    assert await paid_by_currency(intake, merchant_id) == expected
