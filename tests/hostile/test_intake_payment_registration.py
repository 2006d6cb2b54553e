"""Payments come from the platform, once: a merchant cannot register (or claim) someone else's provider payment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from refundflow_shared.events import PaymentSucceeded, Product, dlq_topic, topic_for
from tests.support.intake_harness import ADMIN, Headers, IntakeUnderTest, running_intake
from tests.support.kafka_reader import dead_letter_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def registration(intake: IntakeUnderTest, merchant: Headers, **fields: Any) -> dict[str, Any]:
    return {
        "merchant_id": await intake.merchant_id(merchant),
        "customer_email": "ada@example.com",
        "amount": 4_999,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_pro", "name": "Pro plan", "kind": "one_time"},
        **fields,
    }


async def test_a_merchant_key_cannot_register_payments_but_still_reads_its_own(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    body = await registration(intake, merchant)
    before = await intake.written()

    as_merchant = await intake.client.post("/v1/payments", headers=merchant, json=body)
    anonymous = await intake.client.post("/v1/payments", json=body)

    assert as_merchant.status_code == 403 and as_merchant.json()["error"]["code"] == "platform_only"
    assert anonymous.status_code == 401
    assert await intake.written() == before
    registered = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert registered.status_code == 201, registered.text
    shown = await intake.client.get(f"/v1/payments/{registered.json()['id']}", headers=merchant)
    assert shown.status_code == 200 and shown.json()["provider_payment_id"] == body["provider_payment_id"]
    listed = (await intake.client.get("/v1/payments", headers=merchant)).json()["data"]
    assert [p["id"] for p in listed] == [registered.json()["id"]]


async def test_a_payment_for_an_unknown_merchant_is_refused(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    body = {**await registration(intake, merchant), "merchant_id": "mer_nobody"}
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == 404 and response.json()["error"]["code"] == "merchant_not_found"


async def test_another_merchants_provider_payment_cannot_be_registered_again(intake: IntakeUnderTest) -> None:
    victim, attacker = await intake.merchant(), await intake.merchant()
    victims = await registration(intake, victim)
    assert (await intake.client.post("/v1/payments", headers=ADMIN, json=victims)).status_code == 201
    before = await intake.written()

    claim = {**await registration(intake, attacker), "provider_payment_id": victims["provider_payment_id"]}
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=claim)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "provider_payment_already_registered"
    assert await intake.written() == before
    assert (await intake.client.get("/v1/payments", headers=attacker)).json()["data"] == []


async def test_registering_the_same_payment_again_answers_the_same_payment(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    body = await registration(intake, merchant)
    first = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    again = await intake.client.post("/v1/payments", headers=ADMIN, json=body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(await intake.staged("payment.succeeded", first.json()["id"])) == 1
    balance = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert [line["paid"] for line in balance] == [4_999]
    different = await intake.client.post("/v1/payments", headers=ADMIN, json={**body, "amount": 5_000})
    assert different.status_code == 409 and different.json()["error"]["code"] == "payment_already_registered"


@pytest.mark.parametrize(
    "other",
    [
        {"customer_name": "Someone Else"},
        {"customer_email": "grace@example.com"},
        {"product": {"id": "prod_monthly", "name": "Renamed plan", "kind": "subscription", "category": "service"}},
        {"product": {"id": "prod_monthly", "name": "Monthly plan", "kind": "subscription", "category": "physical"}},
        {"subscription_end": "2027-11-17T10:00:00Z"},
    ],
    ids=["customer name", "customer email", "product name", "product category", "subscription period"],
)
async def test_registering_a_payment_again_with_other_details_is_refused_and_the_first_kept(
    intake: IntakeUnderTest, other: dict[str, Any]
) -> None:
    """Only the money, the customer's email, the product's id and kind and the subscription's id were compared: a
    28-day subscription registered again with a year's period answered 200 and kept 28 days, silently."""
    merchant = await intake.merchant()
    subscription = {
        "id": f"sub_{uuid.uuid4().hex[:12]}",
        "current_period_start": "2026-11-20T10:00:00Z",
        "current_period_end": "2026-12-18T10:00:00Z",
    }
    product = {"id": "prod_monthly", "name": "Monthly plan", "kind": "subscription", "category": "service"}
    body = await registration(intake, merchant, customer_name="Ada", product=product, subscription=subscription)
    first = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert first.status_code == 201, first.text
    if end := other.pop("subscription_end", None):
        other = {"subscription": {**subscription, "current_period_end": end}}
    before = await intake.written()

    again = await intake.client.post("/v1/payments", headers=ADMIN, json={**body, **other})

    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "payment_already_registered"
    assert await intake.written() == before
    shown = (await intake.client.get(f"/v1/payments/{first.json()['id']}", headers=merchant)).json()
    assert shown == {**first.json(), "refunds": shown["refunds"]}, "the first registration kept"


async def test_registering_a_payment_again_with_its_email_in_other_letters_is_the_same_payment(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    body = await registration(intake, merchant)
    first = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    again = await intake.client.post("/v1/payments", headers=ADMIN, json={**body, "customer_email": "Ada@Example.COM"})
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["customer_email"] == "ada@example.com"


async def test_a_billing_event_claiming_another_merchants_provider_payment_is_dead_lettered(
    intake: IntakeUnderTest,
) -> None:
    owner, other = await intake.merchant(), await intake.merchant()
    owned = (await intake.client.post("/v1/payments", headers=ADMIN, json=await registration(intake, owner))).json()
    claim = PaymentSucceeded(
        payment_id=f"pay_billing_{uuid.uuid4().hex}",
        merchant_id=await intake.merchant_id(other),
        customer_email="mallory@example.com",
        amount=4_999,
        currency="EUR",
        provider_payment_id=owned["provider_payment_id"],
        paid_at=datetime(2026, 11, 20, tzinfo=UTC),
        product=Product(id="prod_pro", name="Pro plan", kind="one_time"),
    )
    sent = await intake.publish(claim)

    dlq = dlq_topic(topic_for("payment.succeeded", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "handler_error"
    assert "another merchant" in parked["dlq_error"]
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE id = $1", claim.payment_id) == 0
    assert (await intake.client.get("/v1/payments", headers=other)).json()["data"] == []


@pytest.mark.parametrize("provider_payment_id", ["pay_1a2b3c", "in_1a2b3c", "sub_1a2b3c", "1a2b3c", "PI_1a2b3c"])
async def test_a_provider_payment_id_the_provider_cannot_refund_is_refused(
    intake: IntakeUnderTest, provider_payment_id: str
) -> None:
    """Stripe refunds a payment intent (pi_) or a charge (ch_, py_): any other id was registered, and every refund
    of it failed at the provider (resource_missing) after the merchant had approved it."""
    merchant = await intake.merchant()
    before = await intake.written()
    body = await registration(intake, merchant, provider_payment_id=f"{provider_payment_id}{uuid.uuid4().hex[:8]}")
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "provider_payment_id_unsupported"
    assert await intake.written() == before


@pytest.mark.parametrize("prefix", ["pi_", "ch_", "py_"])
async def test_a_payment_intent_or_a_charge_is_registered(intake: IntakeUnderTest, prefix: str) -> None:
    merchant = await intake.merchant()
    body = await registration(intake, merchant, provider_payment_id=f"{prefix}{uuid.uuid4().hex}")
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == 201, response.text
