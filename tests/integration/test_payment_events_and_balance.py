"""Payments from billing's events (once per payment id), refund outcomes, and the merchant's balance."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from refundflow_shared.events import (
    PaymentSucceeded,
    Product,
    RefundExternalDetected,
    RefundFailed,
    RefundSucceeded,
    SubscriptionPeriod,
    dlq_topic,
    topic_for,
)
from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.kafka_reader import dead_letter_of
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


def billing_payment(merchant_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=f"pay_billing_{uuid.uuid4().hex}",
        merchant_id=merchant_id,
        customer_email="grace@example.com",
        customer_name="Grace Hopper",
        amount=1_500,
        currency="JPY",
        provider_payment_id=f"pi_{uuid.uuid4().hex}",
        paid_at=datetime(2026, 11, 1, tzinfo=UTC),
        product=Product(id="prod_m", name="Monthly", kind="subscription", category="service"),
        subscription=SubscriptionPeriod(
            id="sub_1",
            current_period_start=datetime(2026, 11, 1, tzinfo=UTC),
            current_period_end=datetime(2026, 12, 1, tzinfo=UTC),
        ),
    )


async def test_a_payment_from_billing_is_registered_once_however_often_it_arrives(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    data = billing_payment(await intake.merchant_id(merchant))
    await intake.publish(data)
    await intake.publish(data)  # the same payment again, as a new event: still one payment

    async def registered() -> bool:
        return (await intake.client.get(f"/v1/payments/{data.payment_id}", headers=merchant)).status_code == 200

    await eventually(registered, timeout=30)
    await eventually(
        lambda: _count(intake, "SELECT count(*) FROM intake.inbox WHERE consumer = 'intake'", at_least=2), timeout=30
    )
    payment = (await intake.client.get(f"/v1/payments/{data.payment_id}", headers=merchant)).json()
    assert (payment["customer_name"], payment["amount"], payment["currency"]) == ("Grace Hopper", 1_500, "JPY")
    assert payment["subscription"]["id"] == "sub_1"
    assert payment["product"]["category"] == "service"
    listed = (await intake.client.get("/v1/payments", headers=merchant)).json()["data"]
    assert [p["id"] for p in listed] == [data.payment_id]
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert balance == [{"currency": "JPY", "paid": 1_500, "refunded": 0, "held": 0, "available": 1_500}]


@pytest.mark.parametrize(
    "other",
    [
        {"amount": 150_000},
        {"currency": "EUR"},
        {"provider_payment_id": "pi_other"},
        {"customer_name": "Someone Else"},
        {"product": Product(id="prod_m", name="Monthly", kind="subscription", category="physical")},
        {"subscription": SubscriptionPeriod(id="sub_1", current_period_start=datetime(2026, 11, 1, tzinfo=UTC),
                                            current_period_end=datetime(2027, 11, 1, tzinfo=UTC))},
    ],
    ids=["amount", "currency", "provider payment", "customer name", "product category", "subscription period"],
)  # fmt: skip
async def test_a_payment_from_billing_repeated_with_other_details_is_dead_lettered(
    intake: IntakeUnderTest, other: dict[str, object]
) -> None:
    """It was acknowledged without a word (the first one kept), where the API answers the same 409: any detail, as
    the API compares them all (a category decides excluded-category flags, a period proration)."""
    merchant = await intake.merchant()
    data = billing_payment(await intake.merchant_id(merchant))
    await intake.publish(data)

    async def registered() -> bool:
        return (await intake.client.get(f"/v1/payments/{data.payment_id}", headers=merchant)).status_code == 200

    await eventually(registered, timeout=30)
    if other.get("provider_payment_id"):
        other = {"provider_payment_id": f"pi_{uuid.uuid4().hex}"}
    sent = await intake.publish(data.model_copy(update=other))

    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert "DuplicatePayment" in parked["dlq_error"] and data.payment_id in parked["dlq_error"]
    payment = (await intake.client.get(f"/v1/payments/{data.payment_id}", headers=merchant)).json()
    assert (payment["amount"], payment["currency"]) == (1_500, "JPY"), "the first one kept"
    assert (payment["customer_name"], payment["product"]["category"]) == ("Grace Hopper", "service")


async def test_a_payment_from_billing_whose_provider_payment_no_refund_can_name_is_dead_lettered(
    intake: IntakeUnderTest,
) -> None:
    """An invoice's id, say: it was registered, and every refund of it failed at Stripe after its approval, where
    the API answers the same registration 422 provider_payment_id_unsupported."""
    merchant = await intake.merchant()
    data = billing_payment(await intake.merchant_id(merchant)).model_copy(update={"provider_payment_id": "in_1Qx"})
    sent = await intake.publish(data)

    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "handler_error"
    assert parked["dlq_error"].startswith("UnsupportedProviderPayment: provider_payment_id 'in_1Qx' is neither")
    assert (await intake.client.get(f"/v1/payments/{data.payment_id}", headers=merchant)).status_code == 404
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE provider_payment_id = 'in_1Qx'") == 0


@pytest.mark.parametrize(
    "other", [{"amount": 1_500, "currency": "JPY"}, {"amount": 1_500}, {"currency": "USD"}],
    ids=["amount and currency", "amount", "currency"],
)  # fmt: skip
async def test_billings_payment_of_an_api_registered_provider_payment_with_other_details_is_dead_lettered(
    intake: IntakeUnderTest, other: dict[str, object]
) -> None:
    """Billing's own id for a provider payment registered through the API was linked to it whatever billing said:
    with EUR 100.00 registered and billing saying JPY 1,500, a refund.submit of 1,500 naming billing's id (no
    currency) refunded EUR 15.00."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="EUR")
    billing = billing_payment(await intake.merchant_id(merchant)).model_copy(
        update={"provider_payment_id": payment["provider_payment_id"], "amount": 10_000, "currency": "EUR", **other}
    )
    sent = await intake.publish(billing)

    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert "DuplicatePayment" in parked["dlq_error"] and billing.payment_id in parked["dlq_error"]
    aliases = "SELECT count(*) FROM payment_aliases WHERE payment_id = $1"
    assert await intake.db.fetchval(aliases, billing.payment_id) == 0, "billing's id is not linked to the payment"


async def test_a_payment_of_nothing_from_billing_is_acknowledged_not_registered(intake: IntakeUnderTest) -> None:
    """A free trial's invoice or a 100% coupon is a payment of 0: nothing on it can ever be refunded, so it is not
    registered; it was dead-lettered (the payments table holds amounts above 0), a legitimate event parked."""
    free = billing_payment(await intake.merchant_id(await intake.merchant())).model_copy(update={"amount": 0})
    sent = await intake.publish(free)

    async def handled() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM intake.inbox WHERE event_id = $1", sent.id))

    await eventually(handled, timeout=30)
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE id = $1", free.payment_id) == 0


async def _count(intake: IntakeUnderTest, sql: str, *, at_least: int) -> bool:
    return int(await intake.db.fetchval(sql)) >= at_least


async def test_a_succeeded_refund_finishes_the_refund_the_payment_and_the_balance(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=4_999)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    succeeded = RefundSucceeded(
        refund_id=refund["id"],
        payment_id=payment["id"],
        merchant_id=await intake.merchant_id(merchant),
        customer_email="ada@example.com",
        amount=1_000,
        currency="EUR",
        provider_refund_id="re_1",
    )
    await intake.publish(succeeded, source="refundflow/processor")
    await intake.publish(succeeded, source="refundflow/processor")  # redelivered as a new event: still once

    async def finished() -> bool:
        body = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
        return bool(body["status"] == "succeeded")

    await eventually(finished, timeout=30)
    paid = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert (paid["status"], paid["refunded_amount"], paid["refundable_amount"]) == ("partially_refunded", 1_000, 3_999)
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert balance == [{"currency": "EUR", "paid": 4_999, "refunded": 1_000, "held": 0, "available": 3_999}]
    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    assert [(t["status"], t["actor"]) for t in timeline][-1] == ("succeeded", "refundflow/processor")


async def test_a_failed_refund_frees_the_amount_and_leaves_the_balance(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=2_000)
    refund = await intake.refund(merchant, payment["id"])
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    await intake.publish(
        RefundFailed(
            refund_id=refund["id"],
            payment_id=payment["id"],
            merchant_id=await intake.merchant_id(merchant),
            customer_email="ada@example.com",
            amount=2_000,
            currency="EUR",
            failure_reason="insufficient_funds",
        ),
        source="refundflow/processor",
    )

    async def failed() -> bool:
        body = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
        return bool(body["status"] == "failed")

    await eventually(failed, timeout=30)
    paid = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert (paid["status"], paid["refundable_amount"]) == ("paid", 2_000)
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert balance[0]["available"] == 2_000


async def test_a_payment_for_an_unknown_merchant_is_dead_lettered(intake: IntakeUnderTest) -> None:
    sent = await intake.publish(billing_payment("mer_nobody"))
    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "handler_error" and "mer_nobody" in parked["dlq_error"]
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE merchant_id = 'mer_nobody'") == 0


async def test_a_refund_made_outside_refundflow_uses_up_the_payment_and_the_balance_once(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="EUR")
    detected = RefundExternalDetected(
        payment_id=payment["id"],
        merchant_id=await intake.merchant_id(merchant),
        amount=4_000,
        currency="EUR",
        provider_refund_id=f"re_dashboard_{uuid.uuid4().hex[:8]}",
        provider_payment_id=payment["provider_payment_id"],
        status="succeeded",
    )
    await intake.publish(detected)
    await intake.publish(detected)  # detected again (or redelivered): counted once

    async def recorded() -> bool:
        shown = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
        return bool(shown["refundable_amount"] == 6_000)

    await eventually(recorded, timeout=30)
    await eventually(
        lambda: _count(
            intake, "SELECT count(*) FROM intake.inbox WHERE event_type = 'refund.external_detected'", at_least=2
        ),
        timeout=30,
    )
    shown = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert (shown["status"], shown["refunded_amount"], shown["refundable_amount"]) == (
        "partially_refunded",
        4_000,
        6_000,
    )
    listed = (await intake.client.get("/v1/payments", headers=merchant)).json()["data"]
    assert listed[0]["refundable_amount"] == 6_000
    too_much = await intake.client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 6_001},
    )
    assert too_much.json()["error"]["code"] == "refund_exceeds_refundable"
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert balance == [{"currency": "EUR", "paid": 10_000, "refunded": 4_000, "held": 0, "available": 6_000}]


@pytest.mark.parametrize("mismatch", ["currency", "provider_payment_id"])
async def test_a_refund_made_outside_refundflow_that_does_not_match_its_payment_is_parked_and_counts_nothing(
    intake: IntakeUnderTest, mismatch: str
) -> None:
    """A report of 5,000 USD against a payment in EUR (or of another provider payment) is not money that left this
    payment: it would cut the EUR refundable amount by 5,000 cents and add a USD line to the balance."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="EUR")
    wrong = {"currency": "USD"} if mismatch == "currency" else {"provider_payment_id": "pi_someone_elses"}
    sent = await intake.publish(
        RefundExternalDetected(
            **{
                "payment_id": payment["id"],
                "merchant_id": await intake.merchant_id(merchant),
                "amount": 5_000,
                "currency": "EUR",
                "provider_refund_id": f"re_dashboard_{uuid.uuid4().hex[:8]}",
                "provider_payment_id": payment["provider_payment_id"],
                "status": "succeeded",
                **wrong,
            }
        )
    )

    dlq = dlq_topic(topic_for("refund.external_detected", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=60)
    assert payment["id"] in parked["dlq_error"] and mismatch in parked["dlq_error"]
    shown = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (0, 10_000)
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert balance == [{"currency": "EUR", "paid": 10_000, "refunded": 0, "held": 0, "available": 10_000}]


async def test_a_refund_made_outside_refundflow_reported_just_ahead_of_its_payment_counts_once_it_comes(
    intake: IntakeUnderTest,
) -> None:
    """The report waited in its lane for billing's payment, which that wait kept from being read: dead-lettered."""
    merchant = await intake.merchant()
    payment = billing_payment(await intake.merchant_id(merchant))
    detected = RefundExternalDetected(
        payment_id=payment.payment_id,
        merchant_id=payment.merchant_id,
        amount=500,
        currency="JPY",
        provider_refund_id=f"re_dashboard_{uuid.uuid4().hex[:8]}",
        provider_payment_id=payment.provider_payment_id,
        status="succeeded",
    )
    sent = await intake.publish(detected)
    await asyncio.sleep(0.5)
    await intake.publish(payment)

    async def recorded() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", sent.id)) and bool(
            await intake.db.fetchval("SELECT count(*) FROM payments WHERE id = $1", payment.payment_id)
        )

    await eventually(recorded, timeout=30)
    shown = (await intake.client.get(f"/v1/payments/{payment.payment_id}", headers=merchant)).json()
    assert (shown["refunded_amount"], shown["refundable_amount"]) == (500, 1_000)
    assert await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", sent.id) == 0


async def test_a_refund_made_outside_refundflow_reported_before_its_payment_is_parked_with_an_alert(
    intake: IntakeUnderTest,
) -> None:
    """Each event type has its topic, so the processor's report of a refund made in the provider's dashboard may
    reach intake before billing's payment (intake lagging after an outage, say). Waiting longer than
    AWAITED_EVENT_WAIT_SECONDS for it, it is dead-lettered and the team told: until it is recorded, the payment's
    refundable amount counts money that has left. Replayed once the payment is there, it counts once."""
    merchant = await intake.merchant()
    payment = billing_payment(await intake.merchant_id(merchant))
    sent = await intake.publish(
        RefundExternalDetected(
            payment_id=payment.payment_id,
            merchant_id=payment.merchant_id,
            amount=500,
            currency="JPY",
            provider_refund_id=f"re_dashboard_{uuid.uuid4().hex[:8]}",
            provider_payment_id=payment.provider_payment_id,
            status="succeeded",
        )
    )

    dlq = dlq_topic(topic_for("refund.external_detected", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=60)
    assert parked["dlq_reason"] == "retries_exhausted" and payment.payment_id in parked["dlq_error"]

    async def alerted() -> bool:
        return bool(
            await intake.db.fetchval(
                "SELECT count(*) FROM outbox WHERE event_type = 'team_alert.raised' AND partition_key = $1",
                payment.payment_id,
            )
        )

    await eventually(alerted, timeout=30)

    await intake.publish(payment)

    async def registered() -> bool:
        answer = await intake.client.get(f"/v1/payments/{payment.payment_id}", headers=merchant)
        return answer.status_code == 200

    await eventually(registered, timeout=30)
    await intake.publish(sent)  # so the operator replays the dead letter

    async def recorded() -> bool:
        answer = await intake.client.get(f"/v1/payments/{payment.payment_id}", headers=merchant)
        return answer.status_code == 200 and answer.json()["refundable_amount"] == 1_000

    await eventually(recorded, timeout=30)
    shown = (await intake.client.get(f"/v1/payments/{payment.payment_id}", headers=merchant)).json()
    assert (shown["status"], shown["refunded_amount"]) == ("partially_refunded", 500)


@pytest.mark.parametrize(
    "wrong",
    [
        {"paid_at": datetime(2099, 11, 1, tzinfo=UTC)},  # not paid yet: its refund window would open late
        {"paid_at": datetime(2026, 11, 1)},  # no time zone: which moment it is, nobody knows
        {"subscription": SubscriptionPeriod.model_construct(  # no period at all
            id="sub_1", current_period_start=datetime(2026, 11, 1, tzinfo=UTC),
            current_period_end=datetime(2026, 11, 1, tzinfo=UTC))},
    ],
    ids=["paid_in_the_future", "naive_time", "empty_period"],
)  # fmt: skip
async def test_a_payment_event_the_api_would_refuse_is_dead_lettered_not_registered(
    intake: IntakeUnderTest, wrong: dict[str, object]
) -> None:
    """Billing's event is held to the rules the API holds a platform's call to."""
    payment = billing_payment(await intake.merchant_id(await intake.merchant()))
    sent = await intake.publish(payment.model_copy(update=wrong))  # as billing sent it: not checked on the way
    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "validation_failed"
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE id = $1", payment.payment_id) == 0


async def test_the_ledger_lists_each_money_movement_by_day_and_currency_for_reconciliation(
    intake: IntakeUnderTest,
) -> None:
    """GET /v1/balance/entries: each entry signed as it moves the balance, with our ids, by when it was booked;
    filtered by currency and period, paged with starting_after, and only ever the caller's own."""
    merchant, other = await intake.merchant(), await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    await intake.payment(other, amount=7_000)
    usd = await intake.payment(merchant, amount=3_000, currency="USD")
    payment = await intake.payment(merchant, amount=10_000)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    succeeded = RefundSucceeded(
        refund_id=refund["id"], payment_id=payment["id"], merchant_id=merchant_id, customer_email="ada@example.com",
        amount=1_000, currency="EUR", provider_refund_id=f"re_{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    external = RefundExternalDetected(
        payment_id=payment["id"], merchant_id=merchant_id, amount=500, currency="EUR",
        provider_refund_id=f"re_dashboard_{uuid.uuid4().hex[:8]}", provider_payment_id=payment["provider_payment_id"],
        status="succeeded",
    )  # fmt: skip
    await intake.publish(succeeded, source="refundflow/processor")
    await intake.publish(external, source="refundflow/processor")

    async def booked() -> bool:
        shown = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()
        return bool(shown["refunded_amount"] == 1_500)

    await eventually(booked, timeout=30)
    # Booked on two days: the USD payment yesterday, the rest today.
    yesterday = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
    await intake.db.execute("UPDATE balance_entries SET created_at = $1 WHERE source_id = $2", yesterday, usd["id"])
    await intake.db.execute(
        "UPDATE balance_entries SET created_at = $1 WHERE merchant_id = $2 AND source_id <> $3",
        datetime(2026, 11, 2, 10, tzinfo=UTC),
        merchant_id,
        usd["id"],
    )

    listed = await intake.client.get("/v1/balance/entries", headers=merchant)

    assert listed.status_code == 200, listed.text
    entries = listed.json()["data"]
    moved = [
        (e["kind"], e["amount"], e["currency"], e["payment_id"], e["refund_id"], e["provider_refund_id"])
        for e in entries
    ]
    assert sorted(moved, key=repr) == sorted(
        [
            ("payment", 3_000, "USD", usd["id"], None, None),
            ("payment", 10_000, "EUR", payment["id"], None, None),
            ("refund_hold", -1_000, "EUR", payment["id"], refund["id"], None),
            ("refund_release", 1_000, "EUR", payment["id"], refund["id"], None),
            # The money that left names the provider's refund, ours as the provider's own, to match Stripe's.
            ("refund", -1_000, "EUR", payment["id"], refund["id"], succeeded.provider_refund_id),
            ("external_refund", -500, "EUR", payment["id"], None, external.provider_refund_id),
        ],
        key=repr,
    )
    assert entries[-1]["kind"] == "payment" and entries[-1]["currency"] == "USD"  # newest first
    assert entries[-1]["created_at"] == "2026-11-01T23:59:59Z"
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert {line["currency"]: line["available"] for line in balance} == {
        currency: sum(e["amount"] for e in entries if e["currency"] == currency) for currency in ("EUR", "USD")
    }

    one_day = {"currency": "EUR", "from": "2026-11-02T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
    day = (await intake.client.get("/v1/balance/entries", headers=merchant, params=one_day)).json()
    assert len(day["data"]) == 5 and {e["currency"] for e in day["data"]} == {"EUR"}
    the_day_before = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    before = (await intake.client.get("/v1/balance/entries", headers=merchant, params=the_day_before)).json()
    assert [e["payment_id"] for e in before["data"]] == [usd["id"]]

    pages, after = [], None
    while True:
        params: dict[str, str | int] = {**one_day, "limit": 2, **({"starting_after": after} if after else {})}
        page = (await intake.client.get("/v1/balance/entries", headers=merchant, params=params)).json()
        pages.append([e["id"] for e in page["data"]])
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == [e["id"] for e in day["data"]]

    theirs = (await intake.client.get("/v1/balance/entries", headers=other)).json()["data"]
    assert [(e["kind"], e["amount"]) for e in theirs] == [("payment", 7_000)]
    foreign = await intake.client.get("/v1/balance/entries", headers=other, params={"starting_after": entries[0]["id"]})
    assert foreign.status_code == 400 and foreign.json()["error"]["code"] == "invalid_cursor"
    inverted = await intake.client.get(
        "/v1/balance/entries", headers=merchant, params={"from": one_day["to"], "to": one_day["from"]}
    )
    assert inverted.status_code == 400 and inverted.json()["error"]["code"] == "invalid_period"


async def test_the_balance_shows_what_disputed_payments_amount_to_beside_the_available_it_does_not_lower(
    intake: IntakeUnderTest,
) -> None:
    """A chargeback takes the money back at the provider, and nothing of it reaches the ledger: available still
    counts it. The balance says, per currency, how many of the merchant's payments are disputed and what they
    amount to, matching each dispute as a refund's dispute check does: by our payment id, the provider's, or
    billing's own id for it. Available stays as the ledger has it."""
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    by_ours = await intake.payment(merchant, amount=1_000)
    by_provider = await intake.payment(merchant, amount=2_500)
    by_billing = await intake.payment(merchant, amount=300)
    in_dollars = await intake.payment(merchant, amount=700, currency="USD")
    await intake.payment(merchant, amount=400)  # not disputed
    other = await intake.payment(await intake.merchant(), amount=9_000)
    billing_id = f"pay_billing_{uuid.uuid4().hex[:8]}"
    await intake.db.execute(
        "INSERT INTO intake.payment_aliases (payment_id, merchant_id, provider_payment_id) VALUES ($1, $2, $3)",
        billing_id,
        merchant_id,
        by_billing["provider_payment_id"],
    )
    disputes = [
        (by_ours["id"], merchant_id),
        (by_ours["provider_payment_id"], merchant_id),  # the same payment twice: counted once
        (by_provider["provider_payment_id"], merchant_id),
        (billing_id, merchant_id),
        (in_dollars["id"], merchant_id),
        (other["id"], merchant_id),  # another merchant's payment, named by this one: counts for neither
        (f"pay_unknown_{uuid.uuid4().hex[:8]}", merchant_id),  # before its payment: nothing yet
    ]
    await intake.db.executemany(
        "INSERT INTO intake.payment_disputes (payment_id, merchant_id, reason) VALUES ($1, $2, 'fraudulent')", disputes
    )

    body = (await intake.client.get("/v1/balance", headers=merchant)).json()
    assert body["data"] == [
        {"currency": "EUR", "paid": 4_200, "refunded": 0, "held": 0, "available": 4_200},
        {"currency": "USD", "paid": 700, "refunded": 0, "held": 0, "available": 700},
    ]
    assert body["disputes"] == [
        {"currency": "EUR", "disputed_payments": 3, "disputed": 3_800},
        {"currency": "USD", "disputed_payments": 1, "disputed": 700},
    ]
    page = await owner.page("/dashboard/balance")
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert "does not account for disputes" in text
    assert "3 disputed payments" in text and re.search(r"\b1 disputed payment\b(?!s)", text)
