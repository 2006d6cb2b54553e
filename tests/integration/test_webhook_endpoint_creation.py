"""Creating a webhook endpoint through the API, retried: one endpoint, one secret the merchant has seen."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

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
