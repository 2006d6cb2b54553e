"""Every HTTP input is bounded: what is out of range is a 422 that writes nothing, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from refundflow_shared.money import MAX_MINOR_UNITS
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


@pytest.fixture(scope="module")
async def openapi(intake: IntakeUnderTest) -> dict[str, Any]:
    document: dict[str, Any] = (await intake.client.get("/openapi.json")).json()
    return document


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _unbounded_strings(schema: dict[str, Any], components: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    """Every string (or array) reachable from ``schema`` that has no maximum length."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen = seen | {name}
    schema = _resolve(schema, components)
    found = []
    for variant in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        found += _unbounded_strings(variant, components, where, seen)
    if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
        if schema.get("format") not in ("date-time", "date"):
            found.append(where)
    if schema.get("type") == "array":
        if "maxItems" not in schema:
            found.append(f"{where}[] (items)")
        found += _unbounded_strings(schema.get("items", {}), components, f"{where}[]", seen)
    for name, prop in schema.get("properties", {}).items():
        found += _unbounded_strings(prop, components, f"{where}.{name}", seen)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        found += _unbounded_strings(extra, components, f"{where}{{}}", seen)
    return found


async def test_every_string_in_every_request_has_a_maximum_length(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    unbounded = []
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                where = f"{method.upper()} {path} {parameter['in']}:{parameter['name']}"
                unbounded += _unbounded_strings(parameter["schema"], components, where, set())
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                unbounded += _unbounded_strings(body["schema"], components, f"{method.upper()} {path} body", set())
    assert unbounded == []


@pytest.mark.parametrize(
    ("name_length", "status", "code"),
    [
        (1_100_000, 413, "request_too_large"),  # story 2 of issue 8: past the body limit, refused unread
        (100_000, 422, "invalid_request"),  # under the body limit, refused by the schema's bound
    ],
)
async def test_an_oversized_product_name_is_refused_at_the_door(
    intake: IntakeUnderTest, name_length: int, status: int, code: str
) -> None:
    merchant = await intake.merchant()
    before = await intake.written()
    payments_before = await intake.db.fetchval("SELECT count(*) FROM payments")
    body = {
        "merchant_id": await intake.merchant_id(merchant),
        "customer_email": "ada@example.com",
        "amount": 1_000,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_pro", "name": "x" * name_length, "kind": "one_time"},
    }
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert "xxxx" not in response.text  # the answer does not echo the input back
    assert await intake.written() == before
    assert await intake.db.fetchval("SELECT count(*) FROM payments") == payments_before


@pytest.mark.parametrize("amount", [MAX_MINOR_UNITS + 1, 2**63, 2**70])
async def test_amounts_past_the_limit_are_422_everywhere(intake: IntakeUnderTest, amount: int) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=100)
    too_big = {"amount": amount, "currency": "EUR"}
    calls = {
        "register": intake.client.post(
            "/v1/payments",
            headers=ADMIN,
            json={
                "merchant_id": await intake.merchant_id(merchant),
                "customer_email": "ada@example.com",
                "provider_payment_id": f"pi_{uuid.uuid4().hex}",
                "paid_at": "2026-11-20T10:00:00Z",
                "product": {"id": "prod_pro", "name": "Pro", "kind": "one_time"},
                **too_big,
            },
        ),
        "request": intake.client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], "reason": "duplicate", **too_big},
        ),
        "quote": intake.client.post(
            "/v1/refunds/quote", headers=merchant, json={"payment_id": payment["id"], **too_big}
        ),
        "approve": intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": amount}),
        "policy": intake.client.put("/v1/refund-policy", headers=merchant, json={"second_approval_above": too_big}),
    }
    answers = {name: await call for name, call in calls.items()}
    assert {name: r.status_code for name, r in answers.items()} == {name: 422 for name in answers}
    assert {r.json()["error"]["code"] for r in answers.values()} == {"invalid_request"}


async def test_over_long_path_and_query_parameters_are_422_not_a_database_error(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    long_id = "p" * 5_000  # past PostgreSQL's btree index row size
    answers = [
        await intake.client.put(f"/v1/refund-policy/products/{long_id}", headers=merchant, json={}),
        await intake.client.delete(f"/v1/refund-policy/products/{long_id}", headers=merchant),
        await intake.client.get(f"/v1/payments/{long_id}", headers=merchant),
        await intake.client.get(f"/v1/refunds/{long_id}", headers=merchant),
        await intake.client.post(f"/v1/refunds/{long_id}/approve", headers=merchant),
        await intake.client.delete(f"/v1/api-keys/{long_id}", headers=merchant),
        await intake.client.get(f"/v1/public/merchants/{long_id}/refund-policy"),
        await intake.client.get("/v1/refunds", headers=merchant, params={"payment_id": long_id}),
    ]
    assert [r.status_code for r in answers] == [422] * len(answers)
    assert {r.json()["error"]["code"] for r in answers} == {"invalid_request"}


@pytest.mark.parametrize(
    "settings",
    [
        {"sender_name": "Acme\r\nBcc: everyone@example.com"},
        {"sender_name": "Acme\x00"},
        {"sender_name": "support@bank.example"},
        # an RFC 2047 word: mail clients would decode it into '"PayPal" <service@paypal.com>'
        {"sender_name": "=?utf-8?b?IlBheVBhbCIgPHNlcnZpY2VAcGF5cGFsLmNvbT4=?="},
        {"reply_to": "a@example.com\r\nBcc: b@example.com"},
        {"review_target": "soon\nX-Header: 1"},
        {"team_email": "team@example.com\n"},
    ],
)
async def test_control_characters_never_reach_an_email_header(
    intake: IntakeUnderTest, settings: dict[str, str]
) -> None:
    merchant = await intake.merchant()
    before = await intake.db.fetchval("SELECT count(*) FROM outbox")
    response = await intake.client.put("/v1/notification-settings", headers=merchant, json=settings)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert await intake.db.fetchval("SELECT count(*) FROM outbox") == before


async def test_a_customer_name_with_a_line_break_is_refused(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    body = {
        "merchant_id": await intake.merchant_id(merchant),
        "customer_email": "ada@example.com",
        "customer_name": "Ada\r\nBcc: x@example.com",
        "amount": 1_000,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_pro", "name": "Pro\nplan", "kind": "one_time"},
    }
    response = await intake.client.post("/v1/payments", headers=ADMIN, json=body)
    assert response.status_code == 422
    refused = {name for d in response.json()["error"]["details"] for name in d["loc"]}
    assert {"customer_name", "product"} <= refused


async def test_text_postgresql_cannot_store_is_a_422_whether_in_the_path_the_query_or_the_body(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    before = await intake.written()
    answers = [
        await intake.client.get("/v1/payments/pay_%00x", headers=merchant),
        await intake.client.get("/v1/refunds", headers=merchant, params={"payment_id": "pay_\x00"}),
        await intake.client.post(
            "/v1/refunds",
            headers={**merchant, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": payment["id"], "reason": "other", "reason_details": "\x00"},
        ),
    ]
    assert [r.status_code for r in answers] == [422] * len(answers)
    assert {r.json()["error"]["code"] for r in answers} == {"invalid_request"}
    assert await intake.written() == before


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"to": "0001-01-02T00:00:00Z"}, 400, "invalid_period"),  # 30 days before it is before year 1
        ({"from": "9999-12-31T00:00:00Z"}, 400, "invalid_period"),
        # Before year 1 in UTC (with a `to` near it: a period over 366 days is refused first, 400 invalid_period).
        ({"from": "0001-01-01T00:00:00+14:00", "to": "0001-01-05T00:00:00Z"}, 422, "invalid_request"),
    ],
)
async def test_insight_periods_at_the_edge_of_the_calendar_are_refused_not_a_500(
    intake: IntakeUnderTest, params: dict[str, str], status: int, code: str
) -> None:
    merchant = await intake.merchant()
    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("at", ["9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00"])
async def test_a_timestamp_past_the_calendar_in_utc_is_a_422(intake: IntakeUnderTest, at: str) -> None:
    merchant = await intake.merchant()
    payments_before = await intake.db.fetchval("SELECT count(*) FROM payments")
    body = {
        "merchant_id": await intake.merchant_id(merchant),
        "customer_email": "ada@example.com",
        "amount": 1_000,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": at,
        "product": {"id": "prod_pro", "name": "Pro", "kind": "one_time"},
    }
    subscription = {
        **body,
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_m", "name": "Monthly", "kind": "subscription"},
        "subscription": {"id": "sub_1", "current_period_start": "2026-11-20T10:00:00Z", "current_period_end": at},
    }
    for sent in (body, subscription):
        response = await intake.client.post("/v1/payments", headers=ADMIN, json=sent)
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert await intake.db.fetchval("SELECT count(*) FROM payments") == payments_before
