"""The AsyncAPI document each running service serves is what it really does: the topics it receives on are what
its consumer group subscribes to at the broker, it sends every event type its outbox holds after a refund's
lifecycle (and each consumed topic's dead letters), and together the documents cover every topic."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from refundflow_shared.events import EventType, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from tests.cli.refundflow_stack import RefundflowStack, refundflow_stack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
async def stack(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[RefundflowStack]:
    async with refundflow_stack(postgres_url, kafka_bootstrap) as running:
        yield running


def subscribed_topics(stack: RefundflowStack, service: str) -> set[str]:
    """What the service's running Kafka consumer subscribed to. (Tansu does not keep its members' subscriptions:
    describe_consumer_groups answers empty metadata, so the consumer is asked instead.)"""
    runtime: ServiceRuntime = stack.apps[service].state.runtime
    consumer = runtime.consumer.kafka_consumer
    assert consumer is not None, f"{service} is not consuming"
    return set(consumer.subscription())


async def served_documents(stack: RefundflowStack) -> dict[str, dict[str, Any]]:
    notifier = httpx.ASGITransport(app=stack.apps["notifier"])
    async with (
        httpx.AsyncClient(base_url=stack.processor_url) as processor_client,
        httpx.AsyncClient(transport=notifier, base_url="http://notifier") as notifier_client,
    ):
        clients = {"intake": stack.api, "processor": processor_client, "notifier": notifier_client}
        documents = {}
        for service, client in clients.items():
            response = await client.get("/asyncapi.json")
            assert response.status_code == 200, (service, response.text)
            documents[service] = response.json()
    return documents


def addresses(document: dict[str, Any], action: str) -> set[str]:
    channels = document["channels"]
    return {
        channels[operation["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for operation in document["operations"].values()
        if operation["action"] == action
    }


async def test_each_service_serves_the_contract_it_really_runs(stack: RefundflowStack) -> None:
    merchant_id, auth = await stack.merchant()
    payment = await stack.payment(merchant_id)
    refund_id = await stack.request_refund(auth, payment["id"])
    await stack.approve(auth, refund_id)
    await stack.wait_for_status(refund_id, "succeeded")

    documents = await served_documents(stack)
    covered: set[str] = set()
    for service, document in documents.items():
        receives, sends = addresses(document, "receive"), addresses(document, "send")
        assert receives == subscribed_topics(stack, service), service
        staged = await stack.db.fetch(f"SELECT DISTINCT event_type FROM {service}.outbox")
        assert {topic_for(row["event_type"], stack.prefix) for row in staged} <= sends, service
        assert {dlq_topic(topic) for topic in receives} <= sends, service
        covered |= receives | sends
    for service in ("intake", "processor"):  # the lifecycle went through both: the check above had rows to check
        assert await stack.db.fetchval(f"SELECT count(*) FROM {service}.outbox"), service
    everything = {topic_for(t, stack.prefix) for t in EventType}
    assert everything <= covered
    # Only the platform consumes refund.submit_rejected (intake's answer): no Refundflow service dead-letters it.
    assert {dlq_topic(t) for t in everything} - covered == {dlq_topic(f"{stack.prefix}refund.submit_rejected")}


async def test_each_service_shows_its_contract_as_a_page_that_loads_nothing_from_elsewhere(
    stack: RefundflowStack,
) -> None:
    response = await stack.api.get("/asyncapi")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    assert f'<h3 id="receives-refund.submit">{stack.prefix}refund.submit</h3>' in page
    assert '<th scope="row">idempotency_key</th>' in page
    async with httpx.AsyncClient(base_url=stack.processor_url) as processor:
        answer = await processor.get("/asyncapi")
    assert answer.status_code == 200
    assert f"{stack.prefix}refund.approved.dlq" in answer.text


async def test_each_services_api_reference_is_a_page_of_ours_that_loads_nothing_from_elsewhere(
    stack: RefundflowStack,
) -> None:
    """``/docs``: every endpoint with its parameters, body and error codes, server-rendered; no script, style or font
    from a CDN (a merchant's browser would fetch them from third parties, and offline the page would be blank)."""
    notifier = httpx.ASGITransport(app=stack.apps["notifier"])
    async with (
        httpx.AsyncClient(base_url=stack.processor_url) as processor,
        httpx.AsyncClient(transport=notifier, base_url="http://notifier") as notifier_client,
    ):
        pages = {
            "intake": await stack.api.get("/docs"),
            "processor": await processor.get("/docs"),
            "notifier": await notifier_client.get("/docs"),
        }
        redoc = {"intake": await stack.api.get("/redoc"), "processor": await processor.get("/redoc")}
    for service, response in pages.items():
        assert response.status_code == 200, service
        assert response.headers["content-type"].startswith("text/html"), service
        assert response.headers["content-security-policy"].startswith("default-src 'none'"), service
        assert not re.search(r"<(script|link|img|iframe|object)\b|\ssrc=", response.text), service
        assert "style-src 'sha256-" in response.headers["content-security-policy"], "its own style, by its hash"
    assert {service: r.status_code for service, r in redoc.items()} == {"intake": 404, "processor": 404}
    intake = pages["intake"].text
    assert '<h3 id="post-v1-refunds-refund_id-approve">POST /v1/refunds/{refund_id}/approve</h3>' in intake
    assert "<code>second_approval_needs_a_person</code>" in intake  # each error code the endpoint answers
    assert '<a href="#type-RefundOut">RefundOut</a>' in intake and '<h3 id="type-RefundOut">RefundOut</h3>' in intake
    assert "Amounts are integers in the currency&#x27;s minor units" in intake  # said once, for every amount
