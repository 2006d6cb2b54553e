"""What one merchant may pile up: every policy read and write answers all of its product overrides, and every key
is listed whole, so their numbers are capped (small caps here, to reach them)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
OVERRIDES = 3
LIVE_KEYS = 3


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(
        postgres_url, kafka_bootstrap, product_overrides_per_merchant=OVERRIDES, api_keys_per_merchant=LIVE_KEYS
    ) as running:
        yield running


async def test_a_merchant_has_at_most_the_capped_number_of_product_overrides(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    for n in range(OVERRIDES):
        saved = await intake.client.put(
            f"/v1/refund-policy/products/prod_{n}", headers=merchant, json={"refund_window_days": 7}
        )
        assert saved.status_code == 200, saved.text

    one_more = await intake.client.put(
        "/v1/refund-policy/products/prod_more", headers=merchant, json={"refund_window_days": 7}
    )
    assert one_more.status_code == 422, one_more.text
    assert one_more.json()["error"]["code"] == "too_many_product_overrides"
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert sorted(policy["product_overrides"]) == [f"prod_{n}" for n in range(OVERRIDES)]

    # Changing one it has is no new one; once one is removed, another may take its place.
    changed = await intake.client.put(
        "/v1/refund-policy/products/prod_0", headers=merchant, json={"process_time": "1d"}
    )
    assert changed.status_code == 200, changed.text
    assert (await intake.client.delete("/v1/refund-policy/products/prod_0", headers=merchant)).status_code == 200
    again = await intake.client.put(
        "/v1/refund-policy/products/prod_more", headers=merchant, json={"refund_window_days": 7}
    )
    assert again.status_code == 200, again.text


async def test_the_dashboard_refuses_an_override_past_the_cap_at_the_product_field(intake: IntakeUnderTest) -> None:
    overrides = {f"prod_{n}": {"refund_window_days": 14} for n in range(OVERRIDES)}
    merchant, owner = await merchant_with_owner(intake, overrides=overrides)

    refused = await owner.post_form(
        "/dashboard/refund-policy",
        "/dashboard/refund-policy/overrides",
        {"product_id": "prod_more", "refund_window_days": "7"},
    )
    assert refused.status_code == 422, refused.text[:500]
    assert 'id="product_id-error"' in refused.text and "too_many_product_overrides" in refused.text
    changed = await owner.post_form(
        "/dashboard/refund-policy", "/dashboard/refund-policy/overrides", {"product_id": "prod_1", "process_time": "2d"}
    )
    assert changed.status_code == 303, changed.text[:500]
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert sorted(policy["product_overrides"]) == sorted(overrides)


async def test_a_merchant_has_at_most_the_capped_number_of_live_api_keys(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    for n in range(LIVE_KEYS - 1):
        await intake.second_key(merchant, name=f"key {n}")

    one_more = await intake.client.post("/v1/api-keys", headers=merchant, json={"name": "one more"})
    assert one_more.status_code == 409, one_more.text
    assert one_more.json()["error"]["code"] == "too_many_api_keys"
    keys = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]
    assert len(keys) == LIVE_KEYS

    # A revoked key leaves room; the platform's recovery key is issued whatever the merchant holds.
    revoked = await intake.client.delete(f"/v1/api-keys/{keys[-1]['id']}", headers=merchant)
    assert revoked.status_code == 200, revoked.text
    assert (await intake.client.post("/v1/api-keys", headers=merchant, json={})).status_code == 201
    merchant_id = await intake.merchant_id(merchant)
    recovery = await intake.client.post(f"/v1/merchants/{merchant_id}/api-keys", headers=ADMIN, json={})
    assert recovery.status_code == 201, recovery.text


async def test_the_dashboard_says_when_the_merchant_has_as_many_live_keys_as_it_may(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    for n in range(LIVE_KEYS - 1):
        made = await owner.post_form("/dashboard/settings", "/dashboard/settings/api-keys", {"name": f"key {n}"})
        assert made.status_code == 200 and 'id="new-api-key">rfk_' in made.text, made.text[:500]

    refused = await owner.post_form("/dashboard/settings", "/dashboard/settings/api-keys", {"name": "one more"})
    assert refused.status_code == 409, refused.text[:500]
    assert "too_many_api_keys" in refused.text and 'id="new-api-key"' not in refused.text
    keys = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]
    assert len(keys) == LIVE_KEYS
