"""Where merchants may point our outbound calls, how many, how often; and the Slack URL kept sealed.

This module's intake runs with ``REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS`` off, as production does. Public URLs
are IP literals: they pass the check without any DNS, and nothing here ever calls them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from refundflow_intake.notifier_client import NotifierLinkSettings
from refundflow_shared.outbound_urls import is_public_address
from refundflow_shared.secret_box import SecretBox
from tests.support.infrastructure import free_port
from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
PUBLIC_URL = "https://1.1.1.1/hooks/refunds"
SLACK_URL = "https://1.1.1.1/services/T0001/B0001/s3cr3tT0k3n"
REPLAYS_PER_HOUR = 3


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(
        postgres_url,
        kafka_bootstrap,
        refundflow_allow_private_webhook_urls=False,
        webhook_endpoints_per_merchant=16,
        webhook_replays_per_hour=REPLAYS_PER_HOUR,
        refundflow_internal_token="internal-token",  # so that a call to the notifier is made
    ) as running:
        # A notifier that is not there: calls to it fail at once, as when it is down.
        running.app.state.notifier_link = NotifierLinkSettings(notifier_url=f"http://127.0.0.1:{free_port()}")
        yield running


def a_name_for_loopback() -> str:
    """A host name (not an address, not ``localhost``) that this machine resolves to 127.0.0.1."""
    hosts = Path("/etc/hosts").read_text().splitlines() if Path("/etc/hosts").exists() else []
    names = [n for line in hosts if line.split()[:1] == ["127.0.0.1"] for n in line.split()[1:] if n != "localhost"]
    for name in [*names, socket.gethostname()]:
        try:
            if socket.gethostbyname(name) == "127.0.0.1":
                return name
        except OSError:
            continue
    pytest.skip("no host name resolves to 127.0.0.1 on this machine")


REFUSED = [
    "http://127.0.0.1:8002/internal/v1/merchants",
    "http://10.0.0.7/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://0x7f000001/hook",
    "http://[::1]:5432/",
    "http://[64:ff9b::a00:1]/x",  # 10.0.0.1 through NAT64
    "http://[::ffff:0:a00:1]/x",  # 10.0.0.1 through SIIT
    "http://localhost:8000/v1/payments",
    "http://LOCALHOST./hook",
    "ftp://1.1.1.1/file",
    "https://user:password@1.1.1.1/hook",
]


# IPv4 addresses carried inside IPv6 ones, which a translator on the path would deliver to, and IPv6 blocks this
# Python's is_global still calls global.
NOT_PUBLIC_IPV6 = [
    "64:ff9b::a00:1",  # NAT64's well-known prefix (RFC 6052) around 10.0.0.1
    "64:ff9b::7f00:1",  # ... around 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # ... around 169.254.169.254
    "64:ff9b:1::a00:1",  # NAT64 for local use (RFC 8215)
    "64:ff9b:1::101:101",  # ... whatever IPv4 address it carries
    "::ffff:0:a00:1",  # SIIT's IPv4-translated addresses (::ffff:0:0:0/96) around 10.0.0.1
    "::ffff:0:7f00:1",
    "::a00:1",  # IPv4-compatible (::/96), deprecated
    "fec0::1",  # site-local (fec0::/10), deprecated
    "fc00::1",  # unique local
    "fe80::1",  # link-local
    "2001:db8::1",  # documentation
    "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:a00:1::",  # 6to4 around 10.0.0.1
]
PUBLIC_IPV6 = ["2606:4700:4700::1111", "64:ff9b::101:101", "::ffff:0:101:101", "::ffff:1.1.1.1"]


async def test_ipv4_addresses_inside_ipv6_are_checked_as_ipv4_and_only_global_unicast_ipv6_is_public() -> None:
    refused = [a for a in NOT_PUBLIC_IPV6 if is_public_address(ipaddress.IPv6Address(a))]
    assert refused == [], "called public"
    allowed = [a for a in PUBLIC_IPV6 if not is_public_address(ipaddress.IPv6Address(a))]
    assert allowed == [], "called non-public"


async def test_webhook_and_slack_urls_must_be_public(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    endpoint = await intake.client.post(
        "/v1/webhook-endpoints", headers=merchant, json={"url": PUBLIC_URL, "events": ["refund.succeeded"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    before = await intake.db.fetchval("SELECT count(*) FROM outbox")

    loopback_name = f"http://{a_name_for_loopback()}:8002/"
    by_name = ["http://localhost:8000/v1/payments", "http://LOCALHOST./hook", loopback_name]
    for url in [*REFUSED, loopback_name]:
        created = await intake.client.post(
            "/v1/webhook-endpoints", headers=merchant, json={"url": url, "events": ["refund.succeeded"]}
        )
        updated = await intake.client.patch(
            f"/v1/webhook-endpoints/{endpoint.json()['id']}", headers=merchant, json={"url": url}
        )
        slack = await intake.client.put("/v1/notification-settings", headers=merchant, json={"slack_webhook_url": url})
        for answer in (created, updated, slack):
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["error"]["code"] in ("url_not_allowed", "invalid_request"), (url, answer.text)
            if url in by_name:  # what a name resolves to inside our network is not the merchant's to learn
                assert "127.0.0.1" not in answer.text and "::1" not in answer.text, (url, answer.text)
        assert created.json()["error"]["code"] == "url_not_allowed" or url.startswith("ftp"), url

    assert await intake.db.fetchval("SELECT count(*) FROM outbox") == before
    kept = (await intake.client.get(f"/v1/webhook-endpoints/{endpoint.json()['id']}", headers=merchant)).json()
    assert kept["url"] == PUBLIC_URL


async def test_a_name_of_our_network_is_refused_as_a_name_that_does_not_exist_is(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    internal, unknown = a_name_for_loopback(), f"no-such-host-{uuid.uuid4().hex[:8]}.invalid"
    answers = {}
    for host in (internal, unknown):
        answer = await intake.client.post(
            "/v1/webhook-endpoints", headers=merchant, json={"url": f"http://{host}/x", "events": ["refund.succeeded"]}
        )
        assert answer.status_code == 422, answer.text
        answers[host] = answer.json()["error"]
    said_of_internal, said_of_unknown = (
        {**answers[host], "message": answers[host]["message"].replace(host, "HOST")} for host in (internal, unknown)
    )
    assert said_of_internal == said_of_unknown, "the answer must not tell which of our names exist"
    assert said_of_internal["code"] == "url_not_allowed"


async def test_a_merchant_has_at_most_16_webhook_endpoints(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    bodies = [{"url": f"{PUBLIC_URL}/{n}", "events": ["refund.succeeded"]} for n in range(17)]
    created = [await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=b) for b in bodies[:16]]
    assert [r.status_code for r in created] == [201] * 16

    seventeenth = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=bodies[16])
    assert seventeenth.status_code == 409
    assert seventeenth.json()["error"]["code"] == "too_many_webhook_endpoints"
    await intake.client.delete(f"/v1/webhook-endpoints/{created[0].json()['id']}", headers=merchant)
    assert (await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=bodies[16])).status_code == 201


async def test_replays_reach_back_30_days_at_most_and_one_the_notifier_never_got_spends_no_replay(
    intake: IntakeUnderTest,
) -> None:
    """Only a replay that scheduled something counts against the hour's (test_notifier_merchant_api shows the
    limit): with the notifier down, every one was a 503 and the 11th a 429, though nothing had been replayed."""
    merchant = await intake.merchant()
    endpoint = (
        await intake.client.post(
            "/v1/webhook-endpoints", headers=merchant, json={"url": PUBLIC_URL, "events": ["refund.succeeded"]}
        )
    ).json()
    replay = f"/v1/webhook-endpoints/{endpoint['id']}/replay"

    too_old = (intake.clock() - timedelta(days=30, minutes=1)).isoformat()
    refused = await intake.client.post(replay, headers=merchant, json={"since": too_old})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "replay_window_exceeded"

    recent = {"since": (intake.clock() - timedelta(days=29)).isoformat()}
    answers = [await intake.client.post(replay, headers=merchant, json=recent) for _ in range(REPLAYS_PER_HOUR + 1)]
    answers += [
        await intake.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/1/replay", headers=merchant)
        for _ in range(REPLAYS_PER_HOUR + 1)
    ]
    # The notifier is down here: each replay is a 503, which names no internal host.
    assert [a.status_code for a in answers] == [503] * len(answers)
    assert {a.json()["error"]["code"] for a in answers} == {"notifier_unavailable"}
    assert all("127.0.0.1" not in a.text and "Errno" not in a.text for a in answers)


async def test_a_replay_the_notifier_took_but_did_not_answer_in_time_counts_against_the_hour(
    intake: IntakeUnderTest,
) -> None:
    """A notifier that took the request may be replaying still (a month of events, in batches): only a replay it
    never got, or that it answered as nothing scheduled, gives its slot back, else one merchant retrying a slow
    replay queued the month again and again."""
    merchant = await intake.merchant()
    body = {"url": PUBLIC_URL, "events": ["refund.succeeded"]}
    endpoint = (await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=body)).json()
    taken: list[asyncio.StreamReader] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(reader)  # reads nothing back: the request is in, the answer never comes

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    down = intake.app.state.notifier_link
    intake.app.state.notifier_link = NotifierLinkSettings(
        notifier_url=f"http://127.0.0.1:{port}", notifier_timeout_seconds=0.2
    )
    try:
        since = {"since": (intake.clock() - timedelta(days=29)).isoformat()}
        replay = f"/v1/webhook-endpoints/{endpoint['id']}/replay"
        answers = [await intake.client.post(replay, headers=merchant, json=since) for _ in range(REPLAYS_PER_HOUR + 1)]
    finally:
        intake.app.state.notifier_link = down
        server.close()
    assert [a.status_code for a in answers] == [503] * REPLAYS_PER_HOUR + [429]
    assert len(taken) == REPLAYS_PER_HOUR


async def test_the_slack_url_is_sealed_on_the_topic_and_at_rest_and_never_shown_again(
    intake: IntakeUnderTest,
) -> None:
    merchant: Headers = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    saved = await intake.client.put(
        "/v1/notification-settings",
        headers=merchant,
        json={"slack_webhook_url": SLACK_URL, "sender_name": "Acme Support"},
    )
    assert saved.status_code == 200, saved.text
    shown = (await intake.client.get("/v1/notification-settings", headers=merchant)).json()
    assert shown["slack_webhook_url"] is not None and "s3cr3tT0k3n" not in json.dumps(shown)
    assert "s3cr3tT0k3n" not in saved.text

    [event] = await intake.staged("notification_settings.configured", merchant_id)
    assert "s3cr3tT0k3n" not in json.dumps(event) and "slack_webhook_url" not in event
    key = intake.settings.webhook_secret_key
    assert key is not None
    assert SecretBox(key.get_secret_value()).open(event["sealed_slack_webhook_url"], merchant_id) == SLACK_URL
    stored = await intake.db.fetchval(
        "SELECT row_to_json(s)::text FROM notification_settings s WHERE merchant_id = $1", merchant_id
    )
    assert "s3cr3tT0k3n" not in stored

    # Left out, the saved URL stays (it cannot be read back to send it again); null clears it.
    await intake.client.put("/v1/notification-settings", headers=merchant, json={"sender_name": "Acme"})
    kept = await intake.staged("notification_settings.configured", merchant_id)
    assert SecretBox(key.get_secret_value()).open(kept[-1]["sealed_slack_webhook_url"], merchant_id) == SLACK_URL
    await intake.client.put("/v1/notification-settings", headers=merchant, json={"slack_webhook_url": None})
    cleared = await intake.staged("notification_settings.configured", merchant_id)
    assert cleared[-1]["sealed_slack_webhook_url"] is None
    assert (await intake.client.get("/v1/notification-settings", headers=merchant)).json()["slack_webhook_url"] is None
