"""What the OpenAPI document says is what the API does: each rule stated in the schema and enforced alike."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


@pytest.fixture(scope="module")
async def schemas(intake: IntakeUnderTest) -> dict[str, Any]:
    document: dict[str, Any] = (await intake.client.get("/openapi.json")).json()
    return dict(document["components"]["schemas"])


async def test_a_method_a_path_does_not_take_is_a_405_naming_every_method_it_does(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    for method, path, allowed in [
        ("PUT", "/v1/refunds", {"GET", "POST"}),  # two routes share the path: both are named
        ("TRACE", "/v1/webhook-endpoints/we_1", {"GET", "PATCH", "DELETE"}),
    ]:
        response = await intake.client.request(method, path, headers=merchant)
        assert (response.status_code, response.json()["error"]["code"]) == (405, "method_not_allowed")
        assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}, response.headers["allow"]


async def test_integers_and_booleans_are_what_json_writes_and_a_whole_float_is_the_integer(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    token = f"/v1/payments/{payment['id']}/portal-token"
    for not_an_integer in [True, "72", 72.5]:
        response = await intake.client.post(token, headers=merchant, json={"expires_in_hours": not_an_integer})
        assert response.status_code == 422, (not_an_integer, response.text)
    assert (await intake.client.post(token, headers=merchant, json={"expires_in_hours": 72.0})).status_code == 201
    cancel = f"/v1/payments/{payment['id']}/subscription/cancel"
    refused = await intake.client.post(cancel, headers=merchant, json={"at_period_end": "yes"})
    assert refused.json()["error"]["code"] == "invalid_request"
    refund = await intake.refund(merchant, payment["id"], amount=1500.0)
    assert refund["amount"] == 1500
    policy = await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": "14"})
    assert policy.status_code == 422


async def test_currencies_timestamps_and_emails_are_refused_as_their_schemas_say(
    intake: IntakeUnderTest, schemas: dict[str, Any]
) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    fields = schemas["PaymentCreate"]["properties"]
    good: dict[str, Any] = {
        "merchant_id": merchant_id,
        "customer_email": "ada@example.com",
        "amount": 1_000,
        "currency": "EUR",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_1", "name": "Plan", "kind": "one_time"},
    }
    for field, value in [
        ("currency", "eur"),  # the enum lists capitals only
        ("currency", "XXX"),
        ("paid_at", "2026-11-20"),  # a date, not a date-time
        ("paid_at", "2026-11-20T10:00:00"),  # no time zone
        ("paid_at", 1_795_000_000),  # a Unix timestamp
        ("paid_at", "2099-11-20T10:00:00Z"),  # not paid yet: its refund window would open late and stay open
        ("customer_email", "ada@example.test"),  # a special-use domain (RFC 6761)
    ]:
        body = {**good, field: value, "provider_payment_id": f"pi_{uuid.uuid4().hex}"}
        response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
        assert response.status_code == 422, (field, value, response.text)
    assert "eur" not in fields["currency"]["enum"] and "EUR" in fields["currency"]["enum"]
    assert re.search(fields["customer_email"]["pattern"], "ada@example.test") is None
    assert re.search(fields["customer_email"]["pattern"], "ada@example.com") is not None
    insights = await intake.client.get("/v1/insights/refunds", headers=merchant, params={"to": "0.5"})
    assert insights.status_code == 422


async def test_one_line_text_is_refused_as_its_pattern_says(intake: IntakeUnderTest, schemas: dict[str, Any]) -> None:
    pattern = schemas["MerchantCreate"]["properties"]["name"]["pattern"]
    for name in ["Acme\u0085", "Acme\u2028Corp", "Acme\nCorp"]:
        assert re.search(pattern, name) is None
        response = await intake.client.post("/v1/merchants", headers=ADMIN, json={"name": name})
        assert response.status_code == 422
    assert re.search(pattern, "Acme Software ✓") is not None
    merchant = await intake.merchant()
    for path in ["/v1/payments/pay%00x", "/v1/refunds?payment_id=pay%0Ax", "/v1/payments?starting_after=pay%C2%85"]:
        response = await intake.client.get(path, headers=merchant)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request"), path


async def test_cross_field_rules_are_in_the_document_and_enforced(
    intake: IntakeUnderTest, schemas: dict[str, Any]
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    assert len(schemas["PaymentCreate"]["oneOf"]) == 2  # subscription for, and only for, a subscription product
    assert len(schemas["ProrationIn"]["oneOf"]) == 2  # unused_days or affected_days
    assert len(schemas["RefundCreate"]["allOf"]) == 2  # amount or proration; reason other needs its details
    assert "anyOf" in schemas["Approval"] and "anyOf" in schemas["PortalRefundRequestCreate"]
    subscription_without_one = await intake.client.post(
        "/v1/payments",
        headers=ADMIN,
        json={
            "merchant_id": await intake.merchant_id(merchant),
            "customer_email": "ada@example.com",
            "amount": 1_000,
            "currency": "EUR",
            "provider_payment_id": f"pi_{uuid.uuid4().hex}",
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Plan", "kind": "subscription"},
        },
    )
    assert subscription_without_one.status_code == 422
    cases: list[tuple[dict[str, Any], str]] = [
        ({"reason": "other"}, "reason_details_required"),
        ({"reason": "other", "reason_details": ""}, "reason_details_required"),
        ({"reason": "duplicate", "amount": 100, "proration": {"unused_days": 3}}, "invalid_proration"),
        ({"reason": "duplicate", "proration": {"unused_days": 3, "affected_days": 3}}, "invalid_request"),
    ]
    for body, code in cases:
        response = await intake.client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], **body},
        )
        assert (response.status_code, response.json()["error"]["code"]) == (422, code), body


@pytest.mark.parametrize("depth", [900, 5_000])  # under and past what Python's JSON parser nests
async def test_a_deeply_nested_body_is_a_422_not_a_500(intake: IntakeUnderTest, depth: int) -> None:
    body = '{"name": "Acme", "extra": ' + "[" * depth + "]" * depth + "}"
    response = await intake.client.post(
        "/v1/merchants", headers={**ADMIN, "Content-Type": "application/json"}, content=body
    )
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")
