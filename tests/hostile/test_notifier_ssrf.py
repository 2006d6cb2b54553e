"""Webhooks and Slack alerts never reach our own network: every address is checked when the notifier connects.

The notifier runs with REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS off (production's setting). A real server listens
on loopback (127.0.0.1 and ::1) behind every URL, and must not even see a connection; the delivery log says
only ``url_not_allowed``, never a socket error that would map our hosts and ports.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from refundflow_notifier.outbound_http import outbound_client, post
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_shared.events import RefundRequested
from tests.conftest import create_database
from tests.support.http_servers import HostileHttpServer, hostile_http_server
from tests.support.notifier_harness import (
    EventFeed,
    configure_endpoint,
    configure_team,
    notifier_settings,
    running_notifier,
)
from tests.support.notifier_receivers import smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


class World:
    def __init__(self, feed: EventFeed, pool: asyncpg.Pool, loopback: HostileHttpServer) -> None:
        self.feed, self.pool, self.loopback = feed, pool, loopback


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    with smtp_server() as (_, smtp_port):
        async with hostile_http_server("ok", hosts=("127.0.0.1", "::1")) as loopback:
            settings = notifier_settings(
                await create_database(postgres_url),
                kafka_bootstrap,
                smtp_port,
                refundflow_allow_private_webhook_urls=False,
                webhook_disable_after_failed_events=100,
            )
            async with running_notifier(settings) as (feed, pool):
                yield World(feed, pool, loopback)


async def test_webhooks_and_slack_alerts_to_loopback_in_any_spelling_are_refused_without_connecting(
    world: World,
) -> None:
    merchant_id, port = f"mer_{uuid.uuid4().hex[:10]}", world.loopback.port
    urls = [
        f"http://127.0.0.1:{port}/plain",
        f"http://0x7f000001:{port}/hex",  # 127.0.0.1 in the notation inet_aton also reads
        f"http://[::1]:{port}/ipv6",
        f"http://[64:ff9b::7f00:1]:{port}/nat64",  # 127.0.0.1 through a NAT64 translator
        f"http://[::ffff:0:7f00:1]:{port}/siit",  # 127.0.0.1 through SIIT
        f"http://localhost:{port}/by-name",  # a DNS name that resolves to 127.0.0.1
    ]
    endpoints = [
        await configure_endpoint(
            world.feed, world.pool, merchant_id, url, ["refund.requested"], secret=new_signing_secret()
        )
        for url in urls
    ]
    await configure_team(world.feed, world.pool, merchant_id, slack=f"http://127.0.0.1:{port}/slack")
    suffix = uuid.uuid4().hex[:10]
    await world.feed.publish(
        RefundRequested(
            merchant_id=merchant_id,
            payment_id=f"pay_{suffix}",
            refund_id=f"ref_{suffix}",
            customer_email="ada@example.com",
            amount=4999,
            currency="EUR",
            reason="requested_by_customer",
        )
    )

    async def all_settled() -> bool:
        deliveries = await world.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ANY($1) AND status <> 'pending'", endpoints
        )
        slack = await world.pool.fetchval(
            "SELECT count(*) FROM messages WHERE merchant_id = $1 AND channel = 'slack' AND status <> 'pending'",
            merchant_id,
        )
        return bool(deliveries == len(endpoints) and slack == 1)

    await eventually(all_settled)
    assert world.loopback.connections == 0, "nothing connected to the loopback server"
    statuses = await world.pool.fetch("SELECT status FROM webhook_deliveries WHERE endpoint_id = ANY($1)", endpoints)
    assert {r["status"] for r in statuses} == {"failed"}
    attempts = await world.pool.fetch(
        "SELECT d.endpoint_id, a.status_code, a.error FROM webhook_attempts a"
        " JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = ANY($1)",
        endpoints,
    )
    assert {r["endpoint_id"] for r in attempts} == set(endpoints)
    assert {(r["status_code"], r["error"]) for r in attempts} == {(None, "url_not_allowed")}, "a coarse error only"
    slack = await world.pool.fetchrow("SELECT status, error FROM messages WHERE merchant_id = $1", merchant_id)
    assert slack is not None and (slack["status"], slack["error"]) == ("rejected", "url_not_allowed")


async def test_a_redirect_is_the_answer_and_is_never_followed() -> None:
    async with (
        hostile_http_server("ok") as elsewhere,
        hostile_http_server("redirect", redirect_to=elsewhere.url("internal")) as receiver,
        outbound_client(allow_private=True, max_connections=2) as http,
    ):
        answer = await post(http, receiver.url("hook"), b"{}", {}, deadline=10, max_response_bytes=1024)
    assert answer.status == 307, "the merchant's receiver answered a redirect, and that is what the delivery records"
    assert (receiver.connections, elsewhere.connections) == (1, 0), "nothing connected where the redirect pointed"
