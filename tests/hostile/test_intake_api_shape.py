"""The API's shape as clients read it: error bodies, query parameters, statuses and HTTP semantics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_an_invalid_request_names_its_first_invalid_input_in_param(intake: IntakeUnderTest) -> None:
    """``param`` was documented and never set: a client had to read ``details``, which the schema did not name."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)

    limit = await intake.client.get("/v1/refunds?limit=0", headers=merchant)
    amount = await intake.client.post(
        "/v1/refunds", headers=merchant, json={"payment_id": payment["id"], "reason": "duplicate", "amount": "lots"}
    )
    body = await intake.client.post("/v1/refunds", headers=merchant, content=b"[]")

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
    insights = await intake.client.get("/v1/insights/refunds?from=2026-01-01T00:00:00Z", headers=merchant)
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
