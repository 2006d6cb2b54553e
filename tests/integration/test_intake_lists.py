"""GET /v1/payments and GET /v1/refunds: filters and cursor pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def _all_pages(intake: IntakeUnderTest, path: str, merchant: Headers, **params: Any) -> list[list[str]]:
    pages, after = [], None
    while True:
        query = {**params, **({"starting_after": after} if after else {})}
        body = (await intake.client.get(path, headers=merchant, params=query)).json()
        pages.append([item["id"] for item in body["data"]])
        if not body["has_more"]:
            return pages
        after = body["data"][-1]["id"]


async def test_payments_page_newest_first_without_gaps_or_repeats(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    created = [(await intake.payment(merchant))["id"] for _ in range(7)]
    pages = await _all_pages(intake, "/v1/payments", merchant, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == created[::-1]


async def test_payments_filter_by_status_and_open_request(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    untouched = await intake.payment(merchant)
    asked = await intake.payment(merchant)
    await intake.refund(merchant, asked["id"], amount=100)
    partly = await intake.payment(merchant)
    await intake.db.execute("UPDATE payments SET refunded_amount = 10 WHERE id = $1", partly["id"])
    fully = await intake.payment(merchant, amount=500)
    await intake.db.execute("UPDATE payments SET refunded_amount = 500 WHERE id = $1", fully["id"])

    async def ids(**params: Any) -> set[str]:
        body = (await intake.client.get("/v1/payments", headers=merchant, params=params)).json()
        return {p["id"] for p in body["data"]}

    assert await ids(status="paid") == {untouched["id"], asked["id"]}
    assert await ids(status="partially_refunded") == {partly["id"]}
    assert await ids(status="refunded") == {fully["id"]}
    assert await ids(has_open_refund_request="true") == {asked["id"]}
    assert await ids(has_open_refund_request="false", status="paid") == {untouched["id"]}
    listed = (await intake.client.get("/v1/payments", headers=merchant, params={"status": "paid"})).json()["data"]
    assert {p["id"]: p["refundable_amount"] for p in listed} == {untouched["id"]: 10_000, asked["id"]: 9_900}


async def test_refunds_page_and_filter_by_status_and_payment(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment, other = await intake.payment(merchant), await intake.payment(merchant)
    refunds = [(await intake.refund(merchant, payment["id"], amount=100))["id"] for _ in range(5)]
    elsewhere = await intake.refund(merchant, other["id"], amount=100)
    await intake.client.post(f"/v1/refunds/{refunds[0]}/reject", headers=merchant)

    pages = await _all_pages(intake, "/v1/refunds", merchant, limit=2, payment_id=payment["id"])
    assert [i for p in pages for i in p] == refunds[::-1]
    rejected = (await intake.client.get("/v1/refunds", headers=merchant, params={"status": "rejected"})).json()
    assert [r["id"] for r in rejected["data"]] == [refunds[0]]
    pending = await _all_pages(intake, "/v1/refunds", merchant, status="pending")
    assert set(pending[0]) == {*refunds[1:], elsewhere["id"]}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"status": "lost"}])
async def test_bad_list_parameters_are_422(intake: IntakeUnderTest, params: dict[str, Any]) -> None:
    merchant = await intake.merchant()
    response = await intake.client.get("/v1/payments", headers=merchant, params=params)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
