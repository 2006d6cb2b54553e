"""API keys, and tenancy: another merchant's resources do not exist for you, on every endpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_merchant_creates_lists_and_revokes_api_keys(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    created = await intake.client.post("/v1/api-keys", headers=merchant, json={"name": "billing backend"})
    assert created.status_code == 201
    new_key = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert (await intake.client.get("/v1/api-keys", headers=new_key)).status_code == 200

    listed = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]
    assert [k["name"] for k in listed] == ["default", "billing backend"]
    assert all("api_key" not in k for k in listed)

    revoked = await intake.client.delete(f"/v1/api-keys/{created.json()['id']}", headers=merchant)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await intake.client.get("/v1/api-keys", headers=new_key)).status_code == 401
    again = await intake.client.delete(f"/v1/api-keys/{created.json()['id']}", headers=merchant)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_another_merchants_resources_are_404_on_every_endpoint(intake: IntakeUnderTest) -> None:
    owner, stranger = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(owner)
    subscription = await intake.subscription_payment(owner)
    refund = await intake.refund(owner, payment["id"], amount=100)
    owner_key = (await intake.client.get("/v1/api-keys", headers=owner)).json()["data"][0]["id"]
    await intake.client.put("/v1/refund-policy/products/prod_pro", headers=owner, json={"refund_window_days": 30})
    request = {"payment_id": payment["id"], "reason": "requested_by_customer"}
    c = intake.client

    answers = {
        "get payment": await c.get(f"/v1/payments/{payment['id']}", headers=stranger),
        "cancel subscription": await c.post(f"/v1/payments/{subscription['id']}/subscription/cancel", headers=stranger),
        "request refund": await c.post(
            "/v1/refunds", headers={**stranger, "Idempotency-Key": uuid.uuid4().hex}, json=request
        ),
        "quote refund": await c.post("/v1/refunds/quote", headers=stranger, json=request),
        "get refund": await c.get(f"/v1/refunds/{refund['id']}", headers=stranger),
        "approve refund": await c.post(f"/v1/refunds/{refund['id']}/approve", headers=stranger),
        "reject refund": await c.post(f"/v1/refunds/{refund['id']}/reject", headers=stranger),
        "revoke api key": await c.delete(f"/v1/api-keys/{owner_key}", headers=stranger),
        "delete policy override": await c.delete("/v1/refund-policy/products/prod_pro", headers=stranger),
        "portal token": await c.post(f"/v1/payments/{payment['id']}/portal-token", headers=stranger),
    }
    assert {name: r.status_code for name, r in answers.items()} == {name: 404 for name in answers}
    assert all(r.json()["error"]["code"].endswith("not_found") for r in answers.values())

    # Lists, cursors and totals show only the caller's own.
    assert (await c.get("/v1/payments", headers=stranger)).json()["data"] == []
    assert (await c.get("/v1/refunds", headers=stranger)).json()["data"] == []
    assert (await c.get("/v1/refunds", headers=stranger, params={"payment_id": payment["id"]})).json()["data"] == []
    foreign_cursor = await c.get("/v1/payments", headers=stranger, params={"starting_after": payment["id"]})
    assert foreign_cursor.status_code == 400 and foreign_cursor.json()["error"]["code"] == "invalid_cursor"
    foreign_cursor = await c.get("/v1/refunds", headers=stranger, params={"starting_after": refund["id"]})
    assert foreign_cursor.status_code == 400
    assert (await c.get("/v1/balance", headers=stranger)).json()["data"] == []
    assert [k["id"] for k in (await c.get("/v1/api-keys", headers=stranger)).json()["data"]] != [owner_key]
    assert (await c.get("/v1/refund-policy", headers=stranger)).json()["product_overrides"] == {}
    insights = (await c.get("/v1/insights/refunds", headers=stranger)).json()
    assert (insights["by_reason"], insights["by_product"], insights["decisions"]["count"]) == ([], [], 0)

    # And nothing of the owner's changed.
    assert (await c.get(f"/v1/refunds/{refund['id']}", headers=owner)).json()["status"] == "pending"
    assert (await c.get("/v1/api-keys", headers=owner)).json()["data"][0]["revoked_at"] is None


async def test_every_merchant_endpoint_needs_a_valid_key(intake: IntakeUnderTest) -> None:
    routes = [
        ("GET", "/v1/payments"),
        ("GET", "/v1/refunds"),
        ("POST", "/v1/refunds/quote"),
        ("GET", "/v1/api-keys"),
        ("GET", "/v1/refund-policy"),
        ("GET", "/v1/balance"),
    ]
    for method, path in routes:
        response = await intake.client.request(method, path, headers={"Authorization": "Bearer rfk_nope"})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthorized"
