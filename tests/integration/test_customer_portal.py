"""The customer portal: signed expiring tokens, customer requests, one open request, rate limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def portal_for(intake: IntakeUnderTest, merchant: Headers, payment_id: str, **body: Any) -> Headers:
    response = await intake.client.post(f"/v1/payments/{payment_id}/portal-token", headers=merchant, json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_a_customer_asks_for_a_refund_and_follows_it_to_the_merchants_decision(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])

    submitted = await intake.client.post(
        "/v1/portal/refund-requests",
        headers=customer,
        json={"reason": "product_not_as_described", "message": "It has no export", "amount": 4_000},
    )
    assert submitted.status_code == 201, submitted.text
    request = submitted.json()
    assert (request["status"], request["amount"], request["message"]) == ("pending", 4_000, "It has no export")
    assert request["process_time"] == "5–10 business days"

    merchant_view = (await intake.client.get(f"/v1/refunds/{request['id']}", headers=merchant)).json()
    assert merchant_view["channel"] == "portal"
    assert merchant_view["timeline"][0]["actor"] == "customer:ada@example.com"
    await intake.client.post(f"/v1/refunds/{request['id']}/reject", headers=merchant, json={"note": "Export is in Pro"})

    tracked = (await intake.client.get(f"/v1/portal/refund-requests/{request['id']}", headers=customer)).json()
    assert (tracked["status"], tracked["note"]) == ("rejected", "Export is in Pro")


async def test_something_else_with_only_spaces_as_its_words_is_refused_by_the_api_as_by_the_page(
    intake: IntakeUnderTest,
) -> None:
    """The page refused "   " with "Something else", the portal API took it: a request the merchant could not read."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])
    attempts = "SELECT count(*) FROM rate_limit_attempts"
    before = await intake.written(), await intake.db.fetchval(attempts)

    blank = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "other", "message": " \n\t "}
    )
    merchants = await intake.client.post(
        "/v1/refunds",
        headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "other", "reason_details": "  "},
    )

    assert (blank.status_code, blank.json()["error"]["code"]) == (422, "reason_details_required")
    assert (merchants.status_code, merchants.json()["error"]["code"]) == (422, "reason_details_required")
    assert (await intake.written(), await intake.db.fetchval(attempts)) == before, "no attempt used either"
    said = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "other", "message": "  It broke.\n"}
    )
    assert said.status_code == 201 and said.json()["message"] == "It broke."


async def test_a_customer_asking_for_an_amount_stripe_cannot_refund_exactly_is_told_so_at_once(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="KWD")
    customer = await portal_for(intake, merchant, payment["id"])
    before = await intake.written()

    refused = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate", "amount": 3_333}
    )

    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "amount_not_representable"
    assert await intake.written() == before


async def test_a_customer_holds_at_most_one_open_request_per_payment(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])
    body = {"reason": "requested_by_customer", "amount": 1_000}
    assert (await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)).status_code == 201
    before = await intake.written()

    second = await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)

    assert second.status_code == 409
    assert second.json()["error"]["code"] == "open_request_exists"
    assert await intake.written() == before


async def test_a_retry_with_the_same_idempotency_key_makes_one_request_even_when_approved_at_once(
    intake: IntakeUnderTest,
) -> None:
    """An approved-at-once request no longer holds the payment's one open request: without the key, a customer's
    app retrying a timed-out request (or a double tap) made a second refund."""
    merchant = await intake.merchant()
    rule = {"max_amount": {"amount": 5_000, "currency": "EUR"}, "reasons": ["duplicate"]}
    assert (await intake.client.put("/v1/refund-policy", headers=merchant, json={"auto_approve": rule})).is_success
    payment = await intake.payment(merchant, amount=10_000, currency="EUR")
    customer = {**await portal_for(intake, merchant, payment["id"]), "Idempotency-Key": "tap-1"}
    body = {"reason": "duplicate", "amount": 2_000}

    first, again = [await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body) for _ in "12"]
    other = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate", "amount": 1_000}
    )

    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    refunds = (await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)).json()["refunds"]
    assert [r["amount"] for r in refunds] == [2_000]


async def test_retries_with_the_same_idempotency_key_are_answered_beyond_the_rate_limit(
    intake: IntakeUnderTest,
) -> None:
    """A retry is the first request again, not a new attempt: an app retrying a timed-out request was told "too many
    attempts" though the request existed."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="EUR")
    customer = {**await portal_for(intake, merchant, payment["id"]), "Idempotency-Key": "retry-1"}
    body = {"reason": "duplicate", "amount": 2_000}

    answers = [await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body) for _ in range(8)]

    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers if a.status_code != 201]
    assert len({a.json()["id"] for a in answers}) == 1


async def test_a_token_opens_only_its_own_payment(intake: IntakeUnderTest) -> None:
    merchant, stranger = await intake.merchant(), await intake.merchant()
    payment, other_payment = await intake.payment(merchant), await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])
    other_refund = await intake.refund(merchant, other_payment["id"], amount=100)

    tracked = await intake.client.get(f"/v1/portal/refund-requests/{other_refund['id']}", headers=customer)
    assert tracked.status_code == 404 and tracked.json()["error"]["code"] == "refund_not_found"
    token_for_foreign_payment = await intake.client.post(f"/v1/payments/{payment['id']}/portal-token", headers=stranger)
    assert token_for_foreign_payment.status_code == 404
    # A portal token is not an API key, and an API key is not a portal token.
    assert (await intake.client.get("/v1/payments", headers=customer)).status_code == 401
    as_key = await intake.client.post("/v1/portal/refund-requests", headers=merchant, json={"reason": "duplicate"})
    assert as_key.status_code == 401 and as_key.json()["error"]["code"] == "invalid_portal_token"


async def test_a_tampered_or_expired_token_is_refused(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"], expires_in_hours=1)
    token = customer["Authorization"].removeprefix("Bearer ")
    payload, signature = token.split(".")
    tampered = {"Authorization": f"Bearer {payload[:-2]}xx.{signature}"}
    body = {"reason": "duplicate"}

    answer = await intake.client.post("/v1/portal/refund-requests", headers=tampered, json=body)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_portal_token"

    intake.clock.advance(timedelta(hours=1, seconds=1))
    try:
        expired = await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)
    finally:
        intake.clock.advance(-timedelta(hours=1, seconds=1))
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "portal_token_expired"


async def test_portal_submissions_are_rate_limited_per_payment(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])
    body = {"reason": "duplicate", "amount": 1}
    answers = [
        (await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)).status_code
        for _ in range(7)
    ]
    assert answers == [201, 409, 409, 409, 409, 429, 429]
    limited = await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 3600

    intake.clock.advance(timedelta(hours=1, seconds=1))
    try:
        later = await intake.client.post("/v1/portal/refund-requests", headers=customer, json=body)
    finally:
        intake.clock.advance(-timedelta(hours=1, seconds=1))
    assert later.status_code == 409  # counted again: the window moved on
