"""Merchant webhooks through a real HTTP receiver: signed, retried on schedule, disabled when gone."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import structlog
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from refundflow_notifier import webhook_replays, webhook_store
from refundflow_notifier.outbound_http import outbound_client
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.events import (
    Event,
    PaymentRefunded,
    PortalLink,
    RefundRequested,
    SubscriptionCancelFailed,
    SubscriptionExtensionFailed,
    WebhookEndpointConfigured,
    topic_for,
)
from refundflow_shared.secret_box import SecretBox
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import read_topic
from tests.support.notifier_harness import (
    TEST_SECRET_KEY,
    EventFeed,
    configure_endpoint,
    configure_team,
    notifier_database,
    notifier_settings,
    one_waiting_for_the_other,
    running_notifier,
    succeeded,
)
from tests.support.notifier_receivers import HttpReceiver, Received, http_receiver, smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


class World:
    def __init__(self, feed: EventFeed, pool: asyncpg.Pool, http: HttpReceiver, kafka: str, prefix: str) -> None:
        self.feed, self.pool, self.http = feed, pool, http
        self.kafka, self.prefix = kafka, prefix


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    with smtp_server() as (_, smtp_port):
        async with http_receiver() as http:
            settings = notifier_settings(await create_database(postgres_url), kafka_bootstrap, smtp_port)
            async with running_notifier(settings) as (feed, pool):
                yield World(feed, pool, http, kafka_bootstrap, settings.topic_prefix)


def merchant() -> str:
    return f"mer_{uuid.uuid4().hex[:10]}"


async def received(world: World, name: str, count: int, timeout: float = 60) -> list[Received]:
    async def enough() -> bool:
        return len(world.http.received[name]) >= count

    await eventually(enough, timeout=timeout)
    return world.http.received[name]


async def test_a_subscribed_event_arrives_signed_with_its_sequence_and_a_stable_id(world: World) -> None:
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded", "payment.refunded"], secret=secret
    )
    event = await world.feed.publish(succeeded(m))
    await world.feed.publish(
        RefundRequested(
            merchant_id=m,
            payment_id="pay_x",
            refund_id="ref_x",
            customer_email="ada@example.com",
            amount=1,
            currency="EUR",
            reason="not subscribed",
        )
    )
    refunded = await world.feed.publish(
        PaymentRefunded(
            merchant_id=m,
            payment_id="pay_y",
            refund_id="ref_y",
            amount=4999,
            currency="EUR",
            refunded_amount=4999,
            remaining_amount=0,
        )
    )

    deliveries = await received(world, name, 2)
    await asyncio.sleep(0.5)
    assert len(deliveries) == 2, "refund.requested was not subscribed to"
    payloads = {}
    for delivery in deliveries:
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert delivery.headers["webhook-id"] == payload["id"]
        payloads[payload["type"]] = payload
    assert payloads["refund.succeeded"]["id"] == str(event.id)
    assert payloads["refund.succeeded"]["sequence"] == event.sequence
    assert payloads["refund.succeeded"]["data"]["amount"] == 4999
    assert payloads["payment.refunded"]["id"] == str(refunded.id)


async def test_a_webhook_carries_no_portal_link_the_customers_credential(world: World) -> None:
    """The sealed link lets whoever holds it ask for refunds of the payment: it is for the customer's email only."""
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    await configure_endpoint(world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=secret)
    link = PortalLink(sealed_url=f"v2.k0.{uuid.uuid4().hex}", expires_at=datetime.now(UTC) + timedelta(days=30))
    event = await world.feed.publish(succeeded(m).model_copy(update={"merchant_name": "Acme", "portal_link": link}))

    [delivery] = await received(world, name, 1)
    payload = Webhook(secret).verify(delivery.body, delivery.headers)
    assert payload["id"] == str(event.id) and payload["data"]["merchant_name"] == "Acme"
    assert "portal_link" not in payload["data"]
    assert link.sealed_url.encode() not in delivery.body
    stored = await world.pool.fetchval("SELECT payload FROM webhook_events WHERE event_id = $1", event.id)
    assert link.sealed_url not in stored, "nor is it kept for replays"


async def test_a_refused_cancel_and_a_refused_extension_reach_the_merchants_systems(world: World) -> None:
    """Only the team heard of them (an alert): a merchant's systems, which heard of every cancel and extension the
    provider made, never heard of one it refused."""
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    types = ["subscription.cancel_failed", "subscription.extension_failed"]
    await configure_endpoint(world.feed, world.pool, m, world.http.url(name), types, secret=secret)
    ids = {"merchant_id": m, "payment_id": f"pay_{uuid.uuid4().hex[:10]}", "subscription_id": "sub_1"}
    cancel = await world.feed.publish(
        SubscriptionCancelFailed(**ids, at_period_end=True, reason="No such subscription")
    )
    extension = await world.feed.publish(SubscriptionExtensionFailed(**ids, days=7, reason="it is canceled"))

    payloads = {}
    for delivery in await received(world, name, 2):
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        payloads[payload["type"]] = payload
    assert payloads["subscription.cancel_failed"]["id"] == str(cancel.id)
    assert payloads["subscription.extension_failed"]["id"] == str(extension.id)
    assert payloads["subscription.extension_failed"]["data"]["days"] == 7


async def test_500s_and_a_timeout_are_retried_until_the_endpoint_answers(world: World) -> None:
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    world.http.scripts[name] = [500, (3.0, 200), 503, 204]  # the second answer is later than the 2 s timeout
    endpoint = await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=secret
    )
    event = await world.feed.publish(succeeded(m))

    attempts = await received(world, name, 4)
    assert {a.headers["webhook-id"] for a in attempts} == {str(event.id)}, "one webhook-id for every attempt"
    for attempt in attempts:
        Webhook(secret).verify(attempt.body, attempt.headers)

    async def settled() -> bool:
        status = await world.pool.fetchval("SELECT status FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
        return bool(status == "succeeded")

    await eventually(settled)
    log = await world.pool.fetch(
        "SELECT a.attempt, a.status_code, a.error FROM webhook_attempts a"
        " JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = $1 ORDER BY a.attempt",
        endpoint,
    )
    assert [(r["attempt"], r["status_code"], r["error"]) for r in log] == [
        (1, 500, "http_500"),
        (2, None, "timeout"),
        (3, 503, "http_503"),
        (4, 204, None),
    ]


async def test_410_disables_the_endpoint_and_alerts_the_team(world: World) -> None:
    m, name, slack = merchant(), uuid.uuid4().hex, uuid.uuid4().hex
    world.http.scripts[name] = [410]
    await configure_team(world.feed, world.pool, m, slack=world.http.url(slack))
    endpoint = await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=new_signing_secret()
    )
    await world.feed.publish(succeeded(m))

    [alert] = await received(world, slack, 1)
    assert json.loads(alert.body)["text"].startswith("Webhook endpoint disabled")
    row = await world.pool.fetchrow("SELECT enabled, disabled_reason FROM webhook_endpoints WHERE id = $1", endpoint)
    assert row is not None and not row["enabled"] and "410" in row["disabled_reason"]

    later = await world.feed.publish(succeeded(m))

    async def handled() -> bool:  # its deliveries are queued in the transaction that records it in the inbox
        return bool(await world.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", later.id))

    await eventually(handled)
    # Exact, however late a send would come: nothing is queued for the endpoint, so nothing more can go to it.
    queued = await world.pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
    assert queued == 1, "nothing more is queued for a disabled endpoint"
    assert len(world.http.received[name]) == 1, "nothing more goes to a disabled endpoint"


async def test_a_secret_sealed_again_does_not_enable_an_endpoint_the_notifier_disabled(world: World) -> None:
    """Intake re-seals under a new key (or rolls the secret) before it heard of the disable: its configuration, still
    enabled, changes only the ciphertext. The endpoint stays disabled and intake is told again, for that version; the
    merchant's own enable (the same ciphertext) enables it."""
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    world.http.scripts[name] = [410]
    endpoint = await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=secret
    )
    await world.feed.publish(succeeded(m))

    async def disabled() -> bool:
        return await world.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint) is False

    await eventually(disabled)
    resealed = SecretBox(TEST_SECRET_KEY).seal(secret, context=endpoint)
    configured = {"merchant_id": m, "endpoint_id": endpoint, "url": world.http.url(name), "enabled": True}
    await world.feed.publish(
        WebhookEndpointConfigured(**configured, event_types=["refund.succeeded"], encrypted_secret=resealed, version=2)
    )

    async def taken(version: int) -> bool:
        return bool(
            await world.pool.fetchval("SELECT version = $2 FROM webhook_endpoints WHERE id = $1", endpoint, version)
        )

    await eventually(lambda: taken(2))
    row = await world.pool.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint)
    assert not row["enabled"] and "410" in row["disabled_reason"] and row["encrypted_secret"] == resealed

    async def intake_told_again() -> bool:
        told = await read_topic(world.kafka, topic_for("webhook_endpoint.disabled", world.prefix), expected=1)
        versions = [json.loads(r.value or b"")["version"] for r in told if endpoint.encode() in (r.value or b"")]
        return versions == [1, 2]  # intake hears the disable again, for the version it sent

    await eventually(intake_told_again)

    await world.feed.publish(
        WebhookEndpointConfigured(**configured, event_types=["refund.succeeded"], encrypted_secret=resealed, version=3)
    )
    await eventually(lambda: taken(3))
    assert await world.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint)


async def test_an_endpoint_failing_for_n_events_in_a_row_is_disabled(world: World) -> None:
    m, name, slack = merchant(), uuid.uuid4().hex, uuid.uuid4().hex
    world.http.scripts[name] = [500]
    await configure_team(world.feed, world.pool, m, slack=world.http.url(slack))
    endpoint = await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=new_signing_secret()
    )
    await world.feed.publish(succeeded(m))
    await world.feed.publish(succeeded(m))

    [alert] = await received(world, slack, 1)
    assert "2 events in a row" in json.loads(alert.body)["text"]
    assert len(world.http.received[name]) == 8, "four attempts for each of the two events"
    assert not await world.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint)


async def test_a_slow_endpoint_does_not_hold_up_another(postgres_url: str, kafka_bootstrap: str, world: World) -> None:
    """The slow endpoint answers only once the fast one got all three events and it holds its own three: on a
    loaded machine, consuming and sending the three can take longer than any fixed answer time. Its own notifier
    waits for the answers as long as the test may take, so that no call times out and is sent again."""
    m, slow, fast = merchant(), uuid.uuid4().hex, uuid.uuid4().hex
    gate = asyncio.Event()
    world.http.scripts[slow] = [(gate, 200)]
    with smtp_server() as (_, smtp_port):
        database = await create_database(postgres_url)
        settings = notifier_settings(database, kafka_bootstrap, smtp_port, webhook_timeout_seconds=90.0)
        async with running_notifier(settings) as (feed, pool):
            try:
                for name in (slow, fast):
                    await configure_endpoint(
                        feed, pool, m, world.http.url(name), ["refund.succeeded"], secret=new_signing_secret()
                    )
                for _ in range(3):
                    await feed.publish(succeeded(m))

                fast_ones = await received(world, fast, 3)
                slow_ones = await received(world, slow, 3)
            finally:
                gate.set()

            async def all_answered() -> bool:
                return all(r.answered for r in slow_ones)

            await eventually(all_answered)
    assert len(slow_ones) == 3, "no call to the slow endpoint timed out and was sent again"
    first_answer = min(r.answered for r in slow_ones)
    assert fast_ones[-1].arrived < first_answer, "the fast endpoint got all three before the slow one answered one"
    assert max(r.arrived for r in slow_ones) < first_answer, "the slow endpoint's three were in flight together"


async def test_a_duplicate_event_is_delivered_once(world: World) -> None:
    m, name = merchant(), uuid.uuid4().hex
    await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=new_signing_secret()
    )
    event = await world.feed.publish(succeeded(m))
    await world.feed.redeliver(event)
    marker = await world.feed.publish(succeeded(m))

    deliveries = await received(world, name, 2)
    await asyncio.sleep(1)
    assert sorted(d.headers["webhook-id"] for d in deliveries) == sorted([str(event.id), str(marker.id)])


async def test_a_deliverys_log_lines_name_the_merchant(world: World) -> None:
    m, name = merchant(), uuid.uuid4().hex
    world.http.scripts[name] = [410]
    endpoint = await configure_endpoint(
        world.feed, world.pool, m, world.http.url(name), ["refund.succeeded"], secret=new_signing_secret()
    )

    async def disabled() -> bool:
        return not await world.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:  # what was bound too
        await world.feed.publish(succeeded(m))
        await eventually(disabled)

    lines = [line for line in logs if line.get("endpoint") == endpoint]
    assert {line["event"] for line in lines} == {"webhook_attempted", "webhook_endpoint_disabled"}
    assert all(line.get("merchant_id") == m for line in lines), lines


async def test_a_failed_call_is_logged_as_a_coarse_category_never_a_socket_error(world: World) -> None:
    m, secret = merchant(), new_signing_secret()
    closed_port = free_port()  # nothing listens there
    refused = await configure_endpoint(
        world.feed, world.pool, m, f"http://127.0.0.1:{closed_port}/hook", ["refund.succeeded"], secret=secret
    )
    not_tls = await configure_endpoint(  # TLS spoken to a plain HTTP server
        world.feed, world.pool, m, f"https://127.0.0.1:{world.http.port}/hook", ["refund.succeeded"], secret=secret
    )
    bad_secret = await configure_endpoint(  # no whsec_ key: nothing can be signed with it
        world.feed, world.pool, m, world.http.url(uuid.uuid4().hex), ["refund.succeeded"], secret="whsec_x"
    )
    endpoints = [refused, not_tls, bad_secret]
    await world.feed.publish(succeeded(m))

    async def first_attempts() -> dict[str, str]:
        rows = await world.pool.fetch(
            "SELECT d.endpoint_id, a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
            " WHERE d.endpoint_id = ANY($1) AND a.attempt = 1",
            endpoints,
        )
        return {r["endpoint_id"]: r["error"] for r in rows}

    async def all_tried() -> bool:
        return len(await first_attempts()) == len(endpoints)

    await eventually(all_tried)
    assert await first_attempts() == {refused: "connection_failed", not_tls: "tls_error", bad_secret: "signing_failed"}


async def test_a_live_event_goes_before_a_replay_queued_ahead_of_it(postgres_url: str, world: World) -> None:
    """One delivery at a time to the endpoint, so the order it receives them is the order they were claimed."""
    m, name = merchant(), uuid.uuid4().hex
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    sealed = SecretBox(TEST_SECRET_KEY).seal(new_signing_secret(), context=endpoint_id)
    async with notifier_database(postgres_url, max_size=6) as pool:
        await pool.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
            " VALUES ($1, $2, $3, '{refund.succeeded}', true, $4, 1)",
            endpoint_id,
            m,
            world.http.url(name),
            sealed,
        )
        past = [Event.wrap(succeeded(m), source="refundflow/test", sequence=1) for _ in range(5)]
        async with pool.acquire() as conn:
            await webhook_store.queue_events(conn, [(event, None) for event in past], max_endpoints=5)
        await pool.execute("UPDATE webhook_deliveries SET status = 'succeeded', finished_at = now()")  # sent then
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        async with pool.acquire() as conn, conn.transaction():
            assert await webhook_replays.request_replay(conn, endpoint_id, an_hour_ago, reach=timedelta(days=1))
        replay_id = await pool.fetchval("SELECT id FROM webhook_replays WHERE endpoint_id = $1", endpoint_id)
        while await webhook_replays.walk_batch(pool, replay_id, batch=2, lease_seconds=30):
            pass  # the replay job's walk, all of it queued before the live event
        live = Event.wrap(succeeded(m), source="refundflow/test", sequence=1)
        async with pool.acquire() as conn:
            await webhook_store.queue_events(conn, [(live, None)], max_endpoints=5)

        settings = notifier_settings("postgresql://unused/notifier", "unused:9092", 1025)
        settings = settings.model_copy(update={"webhook_max_in_flight_per_endpoint": 1})
        async with outbound_client(allow_private=True, max_connections=4) as client:
            worker = WebhookWorker(pool, settings, client, SecretBox(TEST_SECRET_KEY))
            task = asyncio.create_task(worker.dispatcher().run())
            try:
                arrived = await received(world, name, 6)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert arrived[0].headers["webhook-id"] == str(live.id), "the live event did not wait behind the replay"
    assert {r.headers["webhook-id"] for r in arrived[1:]} == {str(e.id) for e in past}


async def test_an_event_handled_before_its_endpoints_configuration_is_still_delivered_once(world: World) -> None:
    # The endpoint's configuration is keyed by merchant, the refund's events by payment: another partition, so the
    # refund may be handled first, though it happened after the endpoint was configured.
    m, name, secret = merchant(), uuid.uuid4().hex, new_signing_secret()
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    before = await world.feed.publish(succeeded(m))  # happened before the configuration: not the endpoint's
    configured = Event.wrap(
        WebhookEndpointConfigured(
            merchant_id=m,
            endpoint_id=endpoint_id,
            url=world.http.url(name),
            event_types=["refund.succeeded"],
            enabled=True,
            encrypted_secret=SecretBox(TEST_SECRET_KEY).seal(secret, context=endpoint_id),
            version=1,
        ),
        source="refundflow/test",
        sequence=1,
    )
    after = await world.feed.publish(succeeded(m))
    assert before.time < configured.time < after.time

    async def both_stored() -> bool:
        ids = [before.id, after.id]
        stored: int = await world.pool.fetchval("SELECT count(*) FROM webhook_events WHERE event_id = ANY($1)", ids)
        return stored == 2

    await eventually(both_stored, timeout=60)
    await world.feed.redeliver(configured)
    deliveries = await received(world, name, 1)
    await world.feed.redeliver(configured)  # a redelivery queues nothing again
    await asyncio.sleep(1.5)
    assert [Webhook(secret).verify(d.body, d.headers)["id"] for d in deliveries] == [str(after.id)]
    queued = await world.pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
    assert queued == 1


@pytest.mark.parametrize("first", ["the refund's batch", "the endpoint's configuration"])
async def test_an_event_and_its_endpoints_configuration_handled_at_once_queue_one_delivery(
    postgres_url: str, first: str
) -> None:
    """Handled at the same time on two partitions, each transaction read the other's rows before that one
    committed: the event found no endpoint, the endpoint no event, and the webhook was never queued."""
    m = merchant()
    endpoint_id = f"we_{uuid.uuid4().hex[:12]}"
    endpoint = WebhookEndpointConfigured(
        merchant_id=m,
        endpoint_id=endpoint_id,
        url="https://merchant.example/hooks",
        event_types=["refund.succeeded"],
        enabled=True,
        encrypted_secret="sealed",
        version=1,
    )
    configured_at = datetime.now(UTC)
    refund = Event.wrap(succeeded(m), source="refundflow/test", sequence=1)
    async with notifier_database(postgres_url) as pool, pool.acquire() as one, pool.acquire() as other:

        async def queue_the_refund(conn: asyncpg.Connection) -> None:
            await webhook_store.queue_events(conn, [(refund, None)], max_endpoints=16)

        async def configure(conn: asyncpg.Connection) -> None:
            await webhook_store.apply_endpoint(conn, endpoint, configured_at)

        hold, race = (queue_the_refund, configure) if first == "the refund's batch" else (configure, queue_the_refund)
        await one_waiting_for_the_other(one, other, first=hold, then=race)

        queued = await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
        assert queued == 1
