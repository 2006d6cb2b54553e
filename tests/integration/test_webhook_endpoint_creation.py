"""Creating a webhook endpoint through the API, retried: one endpoint, one secret the merchant has seen."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


def receiver(name: str) -> str:
    return f"http://127.0.0.1:9/hooks/{name}"  # never called: no notifier runs here


async def test_a_retried_creation_with_its_idempotency_key_answers_the_first_endpoint_and_its_secret(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    body = {"url": receiver("retried"), "events": ["refund.succeeded", "refund.failed"]}
    headers = {**merchant, "Idempotency-Key": uuid.uuid4().hex}

    first = await intake.client.post("/v1/webhook-endpoints", headers=headers, json=body)
    retries = await asyncio.gather(
        *(intake.client.post("/v1/webhook-endpoints", headers=headers, json=body) for _ in range(3))
    )

    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    created = first.json()
    assert created["secret"].startswith("whsec_")
    for retried in retries:
        assert retried.status_code == 200, retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json() == created  # the secret is kept sealed: the lost answer is given again, whole
    listed = (await intake.client.get("/v1/webhook-endpoints", headers=merchant)).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]

    other = await intake.client.post("/v1/webhook-endpoints", headers=headers, json={**body, "url": receiver("x")})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"

    rolled = await intake.client.post(f"/v1/webhook-endpoints/{created['id']}/secret", headers=merchant)
    assert rolled.status_code == 200, rolled.text
    after_roll = await intake.client.post("/v1/webhook-endpoints", headers=headers, json=body)
    assert after_roll.status_code == 200 and after_roll.json()["id"] == created["id"]
    assert after_roll.json()["secret"] is None  # the creation's secret no longer signs; the roll showed the new one


async def test_a_second_enabled_endpoint_for_the_same_url_and_events_is_a_409_naming_the_first(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    body = {"url": receiver("twice"), "events": ["refund.succeeded", "refund.failed"]}
    first = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=body)
    assert first.status_code == 201, first.text

    for events in (body["events"], ["refund.failed", "refund.succeeded"]):
        again = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json={**body, "events": events})
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "endpoint_exists"
        assert first.json()["id"] in again.json()["error"]["message"]
    listed = (await intake.client.get("/v1/webhook-endpoints", headers=merchant)).json()["data"]
    assert len(listed) == 1

    other_events = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={**body, "events": ["refund.succeeded"]}
    )
    assert other_events.status_code == 201, other_events.text
    disabled = await intake.client.patch(
        f"/v1/webhook-endpoints/{first.json()['id']}", headers=merchant, json={"enabled": False}
    )
    assert disabled.status_code == 200
    replacing = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=body)
    assert replacing.status_code == 201, replacing.text


async def test_a_change_that_would_make_an_endpoint_a_second_for_the_same_url_and_events_is_a_409_naming_the_first(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    events = ["refund.succeeded", "refund.failed"]
    first = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={"url": receiver("a"), "events": events}
    )
    other_url = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={"url": receiver("b"), "events": events}
    )
    other_events = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={"url": receiver("a"), "events": ["refund.failed"]}
    )
    assert {first.status_code, other_url.status_code, other_events.status_code} == {201}, other_events.text
    first_id, other_url_id, other_events_id = (r.json()["id"] for r in (first, other_url, other_events))
    before = await intake.written()

    for endpoint_id, change in (
        (other_url_id, {"url": receiver("a")}),
        (other_events_id, {"events": ["refund.failed", "refund.succeeded"]}),
        (other_events_id, {"url": receiver("a"), "events": events, "enabled": True}),
    ):
        refused = await intake.client.patch(f"/v1/webhook-endpoints/{endpoint_id}", headers=merchant, json=change)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "endpoint_exists"
        assert first_id in refused.json()["error"]["message"]
    assert await intake.written() == before

    # Enabling a disabled twin is a second enabled one too; an endpoint saved as it is is no twin of itself.
    disabled = await intake.client.patch(
        f"/v1/webhook-endpoints/{other_url_id}", headers=merchant, json={"url": receiver("a"), "enabled": False}
    )
    assert disabled.status_code == 200, disabled.text
    enabled = await intake.client.patch(
        f"/v1/webhook-endpoints/{other_url_id}", headers=merchant, json={"enabled": True}
    )
    assert enabled.status_code == 409 and enabled.json()["error"]["code"] == "endpoint_exists"
    same = await intake.client.patch(
        f"/v1/webhook-endpoints/{first_id}", headers=merchant, json={"url": receiver("a"), "events": events}
    )
    assert same.status_code == 200, same.text
    listed = (await intake.client.get("/v1/webhook-endpoints", headers=merchant)).json()["data"]
    assert sorted((e["url"], e["enabled"]) for e in listed) == [
        (receiver("a"), False),
        (receiver("a"), True),
        (receiver("a"), True),
    ]


async def test_the_dashboard_refuses_to_enable_a_second_endpoint_for_the_same_url_and_events(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    body = {"url": receiver("dashboard"), "events": ["refund.succeeded"]}
    first = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=body)
    assert first.status_code == 201, first.text
    await intake.client.patch(f"/v1/webhook-endpoints/{first.json()['id']}", headers=merchant, json={"enabled": False})
    twin = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=body)
    assert twin.status_code == 201, twin.text
    page = f"/dashboard/webhooks/{first.json()['id']}"

    refused = await owner.post_form(page, f"{page}/enabled", {"enabled": "true"})

    assert refused.status_code == 409, refused.text[:500]
    assert "endpoint_exists" in refused.text and twin.json()["id"] in refused.text
    assert 'role="alert"' in refused.text and "<title>Error: " in refused.text
    endpoint = (await intake.client.get(f"/v1/webhook-endpoints/{first.json()['id']}", headers=merchant)).json()
    assert endpoint["enabled"] is False
