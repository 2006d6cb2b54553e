"""Idempotent refund creation, partial refunds by amount or proration, and quotes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from refundflow_intake.domain import provider_step
from refundflow_shared.money import format_amount
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_retried_post_with_the_same_idempotency_key_returns_the_first_refund(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    body = {"payment_id": payment["id"], "reason": "duplicate", "amount": 1_000}
    headers = {**merchant, "Idempotency-Key": "order-42-refund"}

    first, *retries = await asyncio.gather(
        *(intake.client.post("/v1/refunds", headers=headers, json=body) for _ in range(5))
    )

    assert {r.status_code for r in (first, *retries)} == {201}
    assert {r.json()["id"] for r in retries} == {first.json()["id"]}
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in (first, *retries)) == 4
    refunds = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()["refunds"]
    assert len(refunds) == 1
    assert len(await intake.staged("refund.requested", payment["id"])) == 1


@pytest.mark.parametrize("blank", [b"", b"   ", b"\t", b"\xa0"])  # \xa0: a no-break space, in Latin-1
async def test_a_blank_idempotency_key_is_refused_on_every_route_that_takes_one(
    intake: IntakeUnderTest, blank: bytes
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    token = await intake.client.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant, json={})
    customer = {"Authorization": f"Bearer {token.json()['token']}"}
    asked = {
        "/v1/refunds": (merchant, {"payment_id": payment["id"], "reason": "duplicate", "amount": 1_000}),
        "/v1/merchants": (ADMIN, {"name": "Acme"}),
        "/v1/webhook-endpoints": (merchant, {"url": "http://127.0.0.1:9/hooks/blank", "events": ["refund.failed"]}),
        "/v1/portal/refund-requests": (customer, {"reason": "duplicate"}),
    }
    before = await intake.written()

    for path, (caller, body) in asked.items():
        headers = [*((name.encode(), value.encode()) for name, value in caller.items()), (b"Idempotency-Key", blank)]
        refused = await intake.client.post(path, headers=headers, json=body)
        assert refused.status_code == 400, (path, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("idempotency_key_blank", "Idempotency-Key"), path
    assert await intake.written() == before
    document = (await intake.client.get("/openapi.json")).json()
    for path in asked:
        assert "idempotency_key_blank" in json.dumps(document["paths"][path]["post"]["responses"]["400"]), path


async def test_the_same_idempotency_key_with_another_body_is_a_409(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    headers = {**merchant, "Idempotency-Key": "k1"}
    body = {"payment_id": payment["id"], "reason": "duplicate", "amount": 1_000}
    assert (await intake.client.post("/v1/refunds", headers=headers, json=body)).status_code == 201
    before = await intake.written()

    other = await intake.client.post("/v1/refunds", headers=headers, json={**body, "amount": 2_000})

    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await intake.written() == before


async def test_a_key_is_the_merchants_own_and_a_refused_first_try_can_be_retried(intake: IntakeUnderTest) -> None:
    merchant, other_merchant = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(merchant, amount=1_000)
    too_much = {"payment_id": payment["id"], "reason": "duplicate", "amount": 5_000}
    refused = await intake.client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": "same"}, json=too_much)
    assert refused.status_code == 422
    fixed = {**too_much, "amount": 500}
    assert (
        await intake.client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": "same"}, json=fixed)
    ).status_code == 201
    theirs = await intake.payment(other_merchant)
    response = await intake.client.post(
        "/v1/refunds", headers={**other_merchant, "Idempotency-Key": "same"}, json={**fixed, "payment_id": theirs["id"]}
    )
    assert response.status_code == 201


async def test_one_week_of_downtime_in_a_28_day_month_refunds_a_quarter(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant, period_days=28, amount=2_000)
    refund = await intake.refund(merchant, payment["id"], reason="service_disruption", proration={"affected_days": 7})
    assert refund["amount"] == 500


async def test_unused_days_of_a_given_period_length_for_a_one_time_payment(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=1_000, currency="JPY")
    refund = await intake.refund(merchant, payment["id"], proration={"unused_days": 7, "period_days": 30})
    assert (refund["amount"], refund["currency"]) == (233, "JPY")


@pytest.mark.parametrize(
    ("proration", "code"),
    [
        ({"affected_days": 7}, "invalid_proration"),  # no subscription period, none given
        ({"affected_days": 31, "period_days": 30}, "invalid_proration"),
        ({"affected_days": 3, "unused_days": 3}, "invalid_request"),
    ],
)
async def test_a_proration_that_cannot_be_computed_is_refused(
    intake: IntakeUnderTest, proration: dict[str, int], code: str
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    before = await intake.written()
    response = await intake.client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "service_disruption", "proration": proration},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == code
    assert await intake.written() == before


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    # Rounded half up to what the provider takes (see below): KWD in whole tens of fils, 12.350 × 7/28 = 3.0875 →
    # 3.090; MGA in whole ariary, 101.00 × 7/28 = 25.25 → 25.00.
    [("JPY", 999, 250), ("EUR", 999, 250), ("KWD", 12_350, 3_090), ("MGA", 10_100, 2_500)],
)
async def test_a_quote_computes_the_amount_across_currencies_and_creates_nothing(
    intake: IntakeUnderTest, currency: str, amount: int, expected: int
) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant, period_days=28, amount=amount, currency=currency)
    before = await intake.written()
    response = await intake.client.post(
        "/v1/refunds/quote", headers=merchant, json={"payment_id": payment["id"], "proration": {"affected_days": 7}}
    )
    assert response.status_code == 200, response.text
    quote = response.json()
    assert (quote["amount"], quote["currency"], quote["refundable_amount"]) == (expected, currency, amount)
    assert (quote["flags"], quote["approvals_required"], quote["auto_approved"]) == ([], 1, False)
    assert await intake.written() == before


@pytest.mark.parametrize(
    ("currency", "paid", "asked"),
    [
        ("KWD", 10_000, 3_333),  # 3.333 KWD: Stripe takes three-decimal currencies only in whole tens of fils
        ("BHD", 10_000, 1),
        ("JOD", 10_000, 3_335),
        ("OMR", 10_000, 9_999),
        ("TND", 10_000, 4_321),
        ("MGA", 100_000, 50_050),  # MGA 500.50: Stripe counts MGA with no decimals
        ("KWD", 10_005, None),  # all that is left, 10.005 KWD
    ],
)
async def test_an_amount_stripe_cannot_refund_exactly_is_refused_when_asked_not_after_approval(
    intake: IntakeUnderTest, currency: str, paid: int, asked: int | None
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=paid, currency=currency)
    body: dict[str, object] = {"payment_id": payment["id"], "reason": "duplicate"}
    if asked is not None:
        body["amount"] = asked
    before = await intake.written()

    for path in ("/v1/refunds", "/v1/refunds/quote"):
        refused = await intake.client.post(path, headers={**merchant, "Idempotency-Key": uuid.uuid4().hex}, json=body)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "amount_not_representable"
        # Said in money, as people read it (KWD 3.333, in steps of KWD 0.010), not in minor units.
        assert format_amount(asked or paid, currency) in error["message"], error["message"]
        assert format_amount(provider_step(currency), currency) in error["message"]
        assert "minor units" not in error["message"]
    assert await intake.written() == before


async def test_amounts_stripe_can_take_are_asked_for_and_a_smaller_approval_must_be_one_too(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    kwd = await intake.payment(merchant, amount=10_000, currency="KWD")
    mga = await intake.payment(merchant, amount=100_000, currency="MGA")
    assert (await intake.refund(merchant, mga["id"], amount=50_000))["amount"] == 50_000  # MGA 500.00
    refund = await intake.refund(merchant, kwd["id"], amount=3_330)
    before = await intake.written()

    refused = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 3_325})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "amount_not_representable"
    assert "KWD 3.325" in refused.json()["error"]["message"] and "KWD 0.010" in refused.json()["error"]["message"]
    assert await intake.written() == before
    approved = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 3_320})
    assert (approved.json()["status"], approved.json()["amount"]) == ("processing", 3_320)
