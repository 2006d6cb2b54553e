"""A merchant's receivers that answer forever (a byte a second) or endlessly (megabytes) harm nobody else.

Every outbound call has one deadline and reads at most a capped answer; each merchant and each endpoint has a
cap on calls in flight, so merchant A's dripping endpoints and Slack never hold the slots merchant B's webhooks
and customer emails need, and a delivery is never called twice at once.
"""

from __future__ import annotations

import asyncio
import resource
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_notifier.webhook_store import claim_due
from refundflow_shared.events import RefundRequested
from tests.conftest import create_database
from tests.support.http_servers import HostileHttpServer, hostile_http_server
from tests.support.notifier_harness import (
    EventFeed,
    configure_endpoint,
    configure_team,
    notifier_database,
    notifier_settings,
    running_notifier,
)
from tests.support.notifier_receivers import CapturingSmtpHandler, HttpReceiver, http_receiver, smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
DEADLINE = 20.0  # long enough that A's calls are still dripping when B's are done


class World:
    def __init__(
        self,
        feed: EventFeed,
        pool: asyncpg.Pool,
        mail: CapturingSmtpHandler,
        http: HttpReceiver,
        drip: HostileHttpServer,
        slack_drip: HostileHttpServer,
    ) -> None:
        self.feed, self.pool, self.mail, self.http = feed, pool, mail, http
        self.drip, self.slack_drip = drip, slack_drip


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    with smtp_server() as (mail, smtp_port):
        async with (
            http_receiver() as http,
            hostile_http_server("drip") as drip,
            hostile_http_server("drip") as slack_drip,
        ):
            settings = notifier_settings(
                await create_database(postgres_url),
                kafka_bootstrap,
                smtp_port,
                webhook_timeout_seconds=DEADLINE,
                webhook_max_in_flight=4,
                webhook_max_in_flight_per_merchant=3,
                webhook_max_in_flight_per_endpoint=2,
                message_concurrency=2,
                message_max_in_flight_per_merchant=1,
            )
            async with running_notifier(settings) as (feed, pool):
                yield World(feed, pool, mail, http, drip, slack_drip)


def requested(merchant_id: str, customer: str) -> RefundRequested:
    suffix = uuid.uuid4().hex[:10]
    return RefundRequested(
        merchant_id=merchant_id,
        payment_id=f"pay_{suffix}",
        refund_id=f"ref_{suffix}",
        customer_email=customer,
        amount=4999,
        currency="EUR",
        reason="requested_by_customer",
        channel="portal",  # the customer asked: they are told it was received
    )


async def test_a_merchants_dripping_receivers_delay_no_other_merchant_and_are_never_called_twice_at_once(
    world: World,
) -> None:
    a, b = f"mer_a{uuid.uuid4().hex[:8]}", f"mer_b{uuid.uuid4().hex[:8]}"
    for path in ("a1", "a2"):
        await configure_endpoint(
            world.feed, world.pool, a, world.drip.url(path), ["refund.requested"], secret=new_signing_secret()
        )
    await configure_team(world.feed, world.pool, a, slack=world.slack_drip.url("slack"))
    for _ in range(3):  # six webhooks, three Slack alerts, three customer emails for A
        await world.feed.publish(requested(a, f"a.{uuid.uuid4().hex[:8]}@example.com"))

    async def a_saturated() -> bool:
        return world.drip.open_total() == 3 and world.slack_drip.open_total() == 1

    await eventually(a_saturated)
    b_hook, b_customer = uuid.uuid4().hex, f"b.{uuid.uuid4().hex[:8]}@example.com"
    await configure_endpoint(
        world.feed, world.pool, b, world.http.url(b_hook), ["refund.requested"], secret=new_signing_secret()
    )
    await world.feed.publish(requested(b, b_customer))

    async def b_served() -> bool:
        return bool(world.http.received[b_hook]) and bool(world.mail.to(b_customer))

    await eventually(b_served)
    assert world.drip.open_total() == 3 and world.slack_drip.open_total() == 1, "A's calls were still dripping"
    assert world.drip.most_open["*"] == 3, "A never had more than its 3 webhook slots of the 4"
    assert world.drip.most_open["a1"] == 2 or world.drip.most_open["a2"] == 2, "up to 2 at once per endpoint"
    assert max(world.drip.most_open["a1"], world.drip.most_open["a2"]) == 2
    assert world.slack_drip.most_open["*"] == 1, "A's Slack held 1 of the 2 message slots"
    deliveries = {f"{path} {headers['webhook-id']}" for path, headers in world.drip.requests}
    assert deliveries and all(world.drip.most_open[d] == 1 for d in deliveries), "never one delivery twice at once"


async def finished_delivery(pool: asyncpg.Pool, endpoint: str) -> tuple[str, list[asyncpg.Record]]:
    """The endpoint's one delivery once it is no longer pending: its status and its attempts."""

    async def finished() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status <> 'pending'", endpoint
            )
        )

    await eventually(finished)
    [delivery] = await pool.fetch("SELECT id, status FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
    attempts = await pool.fetch(
        "SELECT status_code, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", delivery["id"]
    )
    return delivery["status"], attempts


async def test_an_endless_answer_is_cut_at_the_cap_without_the_notifier_holding_it(world: World) -> None:
    flood_bytes = 256 * 1024 * 1024
    merchant = f"mer_f{uuid.uuid4().hex[:8]}"
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with hostile_http_server("flood", flood_bytes=flood_bytes) as flood:
        endpoint = await configure_endpoint(
            world.feed, world.pool, merchant, flood.url("hook"), ["refund.requested"], secret=new_signing_secret()
        )
        await world.feed.publish(requested(merchant, "ada@example.com"))
        status, attempts = await finished_delivery(world.pool, endpoint)
        await asyncio.sleep(0)
        sent = flood.bytes_sent
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert status == "succeeded", "the receiver answered 200: what follows the status is not read past the cap"
    assert [(a["status_code"], a["error"]) for a in attempts] == [(200, "response_truncated")]
    assert sent < 32 * 1024 * 1024, f"the notifier stopped reading: the receiver got only {sent} bytes out"
    assert growth_mib < 64, f"the notifier's peak memory grew by {growth_mib:.0f} MiB for a 256 MiB answer"


async def test_a_2xx_with_an_answer_over_the_cap_is_delivered_once(world: World) -> None:
    merchant = f"mer_l{uuid.uuid4().hex[:8]}"
    async with hostile_http_server("flood", flood_bytes=100_000) as large:
        endpoint = await configure_endpoint(
            world.feed, world.pool, merchant, large.url("hook"), ["refund.requested"], secret=new_signing_secret()
        )
        await world.feed.publish(requested(merchant, "grace@example.com"))
        status, attempts = await finished_delivery(world.pool, endpoint)
        await asyncio.sleep(1)  # past the retry schedule's first delays (0.2 s): a retry would have come
        sent = len(large.requests)
    assert status == "succeeded"
    assert [a["status_code"] for a in attempts] == [200]
    assert sent == 1, "the endpoint took the event: it is not sent again"
    enabled = await world.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint)
    assert enabled


async def test_a_delivery_still_being_worked_here_is_not_claimed_again_even_after_its_lease(
    postgres_url: str,
) -> None:
    async with notifier_database(postgres_url) as pool:
        await pool.execute(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, encrypted_secret, version)"
            " VALUES ('we_1', 'mer_1', 'https://example.com/', '{refund.requested}', true, 'v1.x', 1);"
            " INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
            " VALUES ('00000000-0000-0000-0000-000000000001', 'mer_1', 'refund.requested', now(), '{}');"
            " INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id)"
            " VALUES ('we_1', 'mer_1', '00000000-0000-0000-0000-000000000001')"
        )
        caps = {"per_endpoint": 8, "per_merchant": 16}
        [claimed] = await claim_due(pool, 10, [], lease_seconds=0.01, **caps)
        await pool.execute("SELECT pg_sleep(0.05)")  # the lease has run out; the task working on it has not

        assert await claim_due(pool, 10, [claimed.id], lease_seconds=60, **caps) == [], "still ours"
        [again] = await claim_due(pool, 10, [], lease_seconds=60, **caps)  # e.g. after this process died
        assert (again.id, again.attempts) == (claimed.id, 2)
