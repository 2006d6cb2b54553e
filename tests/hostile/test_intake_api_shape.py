"""The API's shape as clients read it: error bodies, query parameters, statuses and HTTP semantics."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake
from tests.support.metrics_scrape import parse

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


def keyed(headers: dict[str, str], **more: str) -> dict[str, str]:
    """A refund request's headers: each one its own Idempotency-Key, as POST /v1/refunds requires."""
    return {**headers, **more, "Idempotency-Key": uuid.uuid4().hex}


async def test_an_invalid_request_names_its_first_invalid_input_in_param(intake: IntakeUnderTest) -> None:
    """``param`` was documented and never set: a client had to read ``details``, which the schema did not name."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)

    limit = await intake.client.get("/v1/refunds?limit=0", headers=merchant)
    amount = await intake.client.post(
        "/v1/refunds",
        headers=keyed(merchant),
        json={"payment_id": payment["id"], "reason": "duplicate", "amount": "lots"},
    )
    body = await intake.client.post("/v1/refunds", headers=keyed(merchant), content=b"[]")

    assert (limit.status_code, limit.json()["error"]["param"]) == (422, "limit")
    assert limit.json()["error"]["details"][0]["loc"] == ["query", "limit"]
    assert (amount.status_code, amount.json()["error"]["param"]) == (422, "amount")
    assert (body.status_code, body.json()["error"]["param"]) == (422, "body")


async def test_a_refused_transition_says_the_refunds_status_in_a_field(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=1_000)
    approved = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    assert approved.status_code == 200, approved.text

    rejected = await intake.client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant, json={"note": "no"})

    assert rejected.status_code == 409
    error = rejected.json()["error"]
    assert (error["code"], error["current_status"]) == ("invalid_status_transition", "processing")


async def test_the_error_schema_describes_every_field_an_error_carries(intake: IntakeUnderTest) -> None:
    schemas = (await intake.client.get("/openapi.json")).json()["components"]["schemas"]
    fields = schemas["ErrorDetail"]["properties"]
    assert {"code", "message", "param", "details", "current_status"} <= set(fields)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("/v1/refunds?payment=pay_1", "payment"),
        ("/v1/refunds?status=pending&status=rejected", "status"),
        ("/v1/payments?state=paid", "state"),
        ("/v1/payments?limit=1&limit=2", "limit"),
        ("/v1/webhook-endpoints?limit=5", "limit"),
        ("/v1/api-keys?expand=all", "expand"),
        ("/v1/insights/refunds?since=2026-01-01", "since"),
        ("/v1/refund-policy?product=prod_pro", "product"),
    ],
)
async def test_a_query_parameter_the_endpoint_does_not_take_or_given_twice_is_refused(
    intake: IntakeUnderTest, query: str, param: str
) -> None:
    """``?payment=`` (for ``payment_id``) was ignored and listed every refund; ``?status=a&status=b`` used the last."""
    merchant = await intake.merchant()
    response = await intake.client.get(query, headers=merchant)
    assert response.status_code == 422, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("invalid_request", param)


async def test_the_query_parameters_an_endpoint_takes_are_still_taken(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"], amount=100)
    listed = await intake.client.get(f"/v1/refunds?payment_id={payment['id']}&status=pending&limit=5", headers=merchant)
    assert listed.status_code == 200 and [r["id"] for r in listed.json()["data"]] == [refund["id"]]
    since = (intake.clock() - timedelta(days=300)).strftime("%Y-%m-%dT%H:%M:%SZ")  # within the longest period
    insights = await intake.client.get(f"/v1/insights/refunds?from={since}", headers=merchant)
    assert insights.status_code == 200, insights.text


async def test_the_openapi_document_lists_the_statuses_a_refund_and_a_payment_can_have(intake: IntakeUnderTest) -> None:
    """They were free strings: generated clients had no enums to branch on."""
    document = (await intake.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    def values(schema: dict[str, Any]) -> set[str]:
        if "$ref" in schema:
            return values(schemas[schema["$ref"].rsplit("/", 1)[1]])
        return set(schema["enum"])

    refund_statuses = {"pending", "processing", "succeeded", "failed", "rejected", "reversed"}
    assert values(schemas["RefundSummary"]["properties"]["status"]) == refund_statuses
    assert values(schemas["TimelineEntry"]["properties"]["status"]) == refund_statuses
    assert values(schemas["PaymentOut"]["properties"]["status"]) == {"paid", "partially_refunded", "refunded"}


async def test_a_head_of_a_resource_answers_its_headers_without_a_body(intake: IntakeUnderTest) -> None:
    """HEAD of every GET resource was 405."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)

    got = await intake.client.get(f"/v1/payments/{payment['id']}", headers=merchant)
    head = await intake.client.head(f"/v1/payments/{payment['id']}", headers=merchant)
    missing = await intake.client.head("/v1/payments/pay_nobody", headers=merchant)

    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    assert missing.status_code == 404
    refused = await intake.client.delete("/v1/refunds", headers=merchant)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"


async def test_a_head_is_counted_by_the_route_it_matched(intake: IntakeUnderTest) -> None:
    """HEAD ran as GET in a copy of the request, where the router named its route: the metrics, reading the
    original, counted every HEAD as route="unmatched"."""
    merchant = await intake.merchant()

    async def heads(route: str) -> float:
        scrape = parse((await intake.client.get("/metrics")).text)
        return scrape.value("refundflow_http_requests_total", method="HEAD", route=route, status="200")

    before, unmatched = await heads("/v1/refunds"), await heads("unmatched")
    head = await intake.client.head("/v1/refunds", headers=merchant)

    assert head.status_code == 200
    assert await heads("/v1/refunds") == before + 1
    assert await heads("unmatched") == unmatched


async def test_a_created_resource_is_named_in_location(intake: IntakeUnderTest) -> None:
    """201 answers carried no Location."""
    merchant = await intake.merchant()
    registration = {
        "merchant_id": await intake.merchant_id(merchant),
        "customer_email": "ada@example.com",
        "amount": 10_000,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": "2026-11-20T10:00:00Z",
        "product": {"id": "prod_pro", "name": "Pro plan", "kind": "one_time"},
    }
    payment = await intake.client.post("/v1/payments", headers=ADMIN, json=registration)
    refund = await intake.client.post(
        "/v1/refunds",
        headers=keyed(merchant),
        json={"payment_id": payment.json()["id"], "reason": "requested_by_customer", "amount": 100},
    )
    endpoint = await intake.client.post(
        "/v1/webhook-endpoints",
        headers=merchant,
        json={"url": "http://127.0.0.1:9/refunds", "events": ["refund.succeeded"]},
    )

    for created, path in [(payment, "/v1/payments"), (refund, "/v1/refunds"), (endpoint, "/v1/webhook-endpoints")]:
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{path}/{created.json()['id']}"
        assert (await intake.client.get(created.headers["location"], headers=merchant)).status_code == 200


async def test_a_path_with_a_trailing_slash_is_not_found_not_redirected_to_the_host_it_named(
    intake: IntakeUnderTest,
) -> None:
    """It was a 307 to an absolute http:// URL built from the request's Host."""
    merchant = await intake.merchant()
    response = await intake.client.get("/v1/refunds/", headers={**merchant, "host": "refunds.example.com"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_json_body_sent_as_another_media_type_is_a_415(intake: IntakeUnderTest, content_type: str) -> None:
    """It was a 422 saying the body was not a valid dictionary."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    body = json.dumps({"payment_id": payment["id"], "reason": "requested_by_customer", "amount": 100})
    before = await intake.written()

    response = await intake.client.post(
        "/v1/refunds", headers=keyed(merchant, **{"content-type": content_type}), content=body
    )

    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert await intake.written() == before
    as_json = keyed(merchant, **{"content-type": "application/json; charset=utf-8"})
    assert (await intake.client.post("/v1/refunds", headers=as_json, content=body)).status_code == 201
    no_body = await intake.client.post(
        f"/v1/refunds/{(await intake.refund(merchant, payment['id'], amount=50))['id']}/approve",
        headers={**merchant, "content-type": "text/plain"},
    )
    assert no_body.status_code == 200, no_body.text


async def test_every_operation_taking_a_body_documents_the_415(intake: IntakeUnderTest) -> None:
    paths = (await intake.client.get("/openapi.json")).json()["paths"]
    operations = [operation for methods in paths.values() for operation in methods.values()]
    with_bodies = [operation for operation in operations if "requestBody" in operation]
    assert with_bodies and all("415" in operation["responses"] for operation in with_bodies)
    assert not any("415" in operation["responses"] for operation in operations if "requestBody" not in operation)
