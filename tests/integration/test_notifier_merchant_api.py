"""The merchant configures webhooks and team channels through intake's API; the notifier acts on them.

Intake and the notifier run in-process on one database and broker; a real HTTP receiver verifies what arrives
with the secret intake showed once.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.notifier_client import NotifierLinkSettings
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.app import create_app as create_notifier
from refundflow_shared.events import topic_for
from refundflow_shared.secret_box import SecretBox
from tests.conftest import create_database
from tests.support.dashboard_people import Person, accept_invite, csrf_of
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import read_topic
from tests.support.notifier_harness import TEST_INTERNAL_TOKEN, TEST_SECRET_KEY, EventFeed, notifier_settings, succeeded
from tests.support.notifier_receivers import HttpReceiver, Received, http_receiver, smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
ADMIN_TOKEN = "test-admin-token"


class World:
    def __init__(
        self,
        api: httpx.AsyncClient,
        notifier_db: asyncpg.Pool,
        feed: EventFeed,
        http: HttpReceiver,
        kafka: str,
        prefix: str,
    ) -> None:
        self.api, self.notifier_db, self.feed, self.http = api, notifier_db, feed, http
        self.intake: Any = None
        self.kafka, self.prefix = kafka, prefix

    @property
    def app(self) -> FastAPI:
        """The intake, for people in its dashboard."""
        app: FastAPI = self.intake
        return app


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    from aiokafka import AIOKafkaProducer

    database_url = await create_database(postgres_url)
    with smtp_server() as (_, smtp_port):
        async with http_receiver() as http:
            settings = notifier_settings(database_url, kafka_bootstrap, smtp_port)
            port = free_port()
            notifier = uvicorn.Server(
                uvicorn.Config(create_notifier(settings), host="127.0.0.1", port=port, log_config=None)
            )
            serving = asyncio.create_task(notifier.serve())
            await eventually(lambda: _started(notifier), timeout=60)
            intake = create_intake(
                IntakeSettings(
                    database_url=database_url,
                    kafka_bootstrap_servers=kafka_bootstrap,
                    topic_prefix=settings.topic_prefix,
                    refundflow_admin_token=ADMIN_TOKEN,
                    webhook_secret_key=TEST_SECRET_KEY,
                    refundflow_allow_private_webhook_urls=True,  # the receivers listen on 127.0.0.1
                    refundflow_internal_token=TEST_INTERNAL_TOKEN,
                    dashboard_cookie_secure=False,  # the test client talks plain http
                )
            )
            intake.state.notifier_link = NotifierLinkSettings(notifier_url=f"http://127.0.0.1:{port}")
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
            await producer.start()
            pool = await asyncpg.create_pool(database_url, server_settings={"search_path": "notifier"})
            assert pool is not None
            try:
                async with (
                    intake.router.lifespan_context(intake),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=intake), base_url="http://intake") as api,
                ):
                    world = World(
                        api,
                        pool,
                        EventFeed(producer, settings.topic_prefix),
                        http,
                        kafka_bootstrap,
                        settings.topic_prefix,
                    )
                    world.intake = intake
                    yield world
            finally:
                await pool.close()
                await producer.stop()
                notifier.should_exit = True
                await serving


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


async def new_merchant(world: World) -> tuple[str, dict[str, str]]:
    response = await world.api.post(
        "/v1/merchants", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def received(world: World, name: str, count: int) -> list[Received]:
    async def enough() -> bool:
        return len(world.http.received[name]) >= count

    await eventually(enough, timeout=60)
    return world.http.received[name]


async def endpoint_known(world: World, endpoint_id: str, **expected: Any) -> None:
    async def matches() -> bool:
        row = await world.notifier_db.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint_id)
        return row is not None and all(row[k] == v for k, v in expected.items())

    await eventually(matches, timeout=60)


async def test_a_merchants_endpoint_receives_webhooks_signed_with_the_secret_shown_once(world: World) -> None:
    merchant_id, auth = await new_merchant(world)
    name = uuid.uuid4().hex
    created = await world.api.post(
        "/v1/webhook-endpoints", headers=auth, json={"url": world.http.url(name), "events": ["refund.succeeded"]}
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == ["refund.succeeded"] and endpoint["enabled"] is True
    listed = (await world.api.get("/v1/webhook-endpoints", headers=auth)).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]

    records = await read_topic(world.kafka, topic_for("webhook_endpoint.configured", world.prefix), expected=1)
    [announced] = [r.value or b"" for r in records if endpoint["id"].encode() in (r.value or b"")]
    assert json.loads(announced)["encrypted_secret"].startswith("v2.")
    assert endpoint["secret"].removeprefix("whsec_") not in announced.decode(), "the secret never travels in clear"

    await endpoint_known(world, endpoint["id"])
    event = await world.feed.publish(succeeded(merchant_id))
    [delivery] = await received(world, name, 1)
    payload = Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
    assert payload["id"] == str(event.id) and payload["type"] == "refund.succeeded"


async def test_the_delivery_log_shows_attempts_and_a_delivery_or_a_period_can_be_replayed(world: World) -> None:
    merchant_id, auth = await new_merchant(world)
    name = uuid.uuid4().hex
    world.http.scripts[name] = [500, 200]
    endpoint = (
        await world.api.post(
            "/v1/webhook-endpoints", headers=auth, json={"url": world.http.url(name), "events": ["refund.succeeded"]}
        )
    ).json()
    await endpoint_known(world, endpoint["id"])
    before = datetime.now(UTC) - timedelta(seconds=1)
    await world.feed.publish(succeeded(merchant_id))
    await world.feed.publish(succeeded(merchant_id))  # another payment: either may reach the endpoint first
    await received(world, name, 3)

    async def settled() -> bool:
        log = (await world.api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=auth)).json()
        return len(log["deliveries"]) == 2 and all(d["status"] == "succeeded" for d in log["deliveries"])

    await eventually(settled)
    log = (await world.api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=auth)).json()
    assert log["endpoint"]["enabled"] is True
    logs = sorted(([a["status_code"] for a in d["attempt_log"]] for d in log["deliveries"]), key=len)
    assert logs == [[200], [500, 200]], "the endpoint's first answer was a 500, retried"
    first = next(d for d in log["deliveries"] if len(d["attempt_log"]) == 2)
    assert all(a["latency_ms"] >= 0 for a in first["attempt_log"])

    replay = await world.api.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{first['id']}/replay", headers=auth
    )
    assert replay.status_code == 202 and replay.json() == {"scheduled": 1}
    again = await received(world, name, 4)
    assert again[-1].headers["webhook-id"] == first["event_id"], "a replay carries the event's webhook-id"

    since = await world.api.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/replay", headers=auth, json={"since": before.isoformat()}
    )
    # Answered at once, walked by the notifier's replay job: the period's two events arrive again.
    assert since.status_code == 202 and since.json() == {"replay": "started", "scheduled": 0}
    await received(world, name, 6)

    unknown = await world.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/999999/replay", headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "webhook_delivery_not_found"


# In UTC it is 10000-01-01T13:00: past what Python's datetime (and so the notifier's query) can hold.
NEVER = "9999-12-31T23:00:00-14:00"
REPLAYS_PER_HOUR = 10  # intake's default


async def test_a_replay_since_a_time_to_come_is_refused_before_it_counts_against_the_hourly_replays(
    world: World,
) -> None:
    _, auth = await new_merchant(world)
    body = {"url": world.http.url(uuid.uuid4().hex), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    replay = f"/v1/webhook-endpoints/{endpoint['id']}/replay"

    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for since in [NEVER, in_an_hour] * REPLAYS_PER_HOUR:
        refused = await world.api.post(replay, headers=auth, json={"since": since})
        assert refused.status_code == 422, (since, refused.text)
        assert refused.json()["error"]["code"] == "replay_since_in_future", refused.text
    allowed = await world.api.post(replay, headers=auth, json={"since": datetime.now(UTC).isoformat()})
    assert allowed.status_code == 202, "the refused replays spent none of the hour's"


async def test_only_replays_that_schedule_something_count_against_the_hourly_replays(world: World) -> None:
    """An unknown delivery (404) or a period with nothing in it (nothing_to_replay) replays nothing, so spends none of
    the hour's replays: each took one, and 10 of them refused the replays the merchant then needed."""
    merchant_id, auth = await new_merchant(world)
    name = uuid.uuid4().hex
    body = {"url": world.http.url(name), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    await world.feed.publish(succeeded(merchant_id))
    await received(world, name, 1)
    replays = f"/v1/webhook-endpoints/{endpoint['id']}"

    async def delivered() -> bool:
        log = (await world.api.get(f"{replays}/deliveries", headers=auth)).json()
        return [d["status"] for d in log["deliveries"]] == ["succeeded"]

    await eventually(delivered)
    [delivery] = (await world.api.get(f"{replays}/deliveries", headers=auth)).json()["deliveries"]
    for _ in range(REPLAYS_PER_HOUR + 1):
        unknown = await world.api.post(f"{replays}/deliveries/999999/replay", headers=auth)
        assert unknown.status_code == 404, unknown.text
        nothing = await world.api.post(f"{replays}/replay", headers=auth, json={"since": datetime.now(UTC).isoformat()})
        nothing_answer = {"replay": "nothing_to_replay", "scheduled": 0}
        assert (nothing.status_code, nothing.json()) == (202, nothing_answer), nothing.text

    again = f"{replays}/deliveries/{delivery['id']}/replay"
    replayed = [await world.api.post(again, headers=auth) for _ in range(REPLAYS_PER_HOUR)]
    assert [(r.status_code, r.json()) for r in replayed] == [(202, {"scheduled": 1})] * REPLAYS_PER_HOUR
    limited = await world.api.post(again, headers=auth)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 3600
    _, other = await new_merchant(world)
    theirs = (await world.api.post("/v1/webhook-endpoints", headers=other, json=body)).json()
    since = {"since": datetime.now(UTC).isoformat()}
    not_limited = await world.api.post(f"/v1/webhook-endpoints/{theirs['id']}/replay", headers=other, json=since)
    assert not_limited.status_code == 202, "another merchant's hour is its own"


async def test_a_replay_since_a_time_is_answered_by_a_notifier_of_the_previous_release(world: World) -> None:
    """The previous notifier answers a replay since a time with how many deliveries it queued (``scheduled``): intake
    upgraded first read it as started (some) or nothing_to_replay (none), where it failed validation and answered 500.
    Its own answer keeps ``scheduled`` beside ``replay``, so merchant scripts reading it still find it."""
    _, auth = await new_merchant(world)
    endpoint = (
        await world.api.post(
            "/v1/webhook-endpoints", headers=auth, json={"url": world.http.url("old"), "events": ["refund.succeeded"]}
        )
    ).json()
    answers = [{"scheduled": 3}, {"scheduled": 0}]
    old_notifier = FastAPI()

    @old_notifier.post("/internal/v1/merchants/{merchant_id}/webhook-endpoints/{endpoint_id}/replays")
    async def replays(merchant_id: str, endpoint_id: str) -> dict[str, int]:
        return answers.pop(0)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(old_notifier, host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    link = world.intake.state.notifier_link
    try:
        await eventually(lambda: _started(server), timeout=30)
        world.intake.state.notifier_link = NotifierLinkSettings(notifier_url=f"http://127.0.0.1:{port}")
        since = {"since": datetime.now(UTC).isoformat()}
        replay = f"/v1/webhook-endpoints/{endpoint['id']}/replay"
        some = await world.api.post(replay, headers=auth, json=since)
        none = await world.api.post(replay, headers=auth, json=since)
    finally:
        world.intake.state.notifier_link = link
        server.should_exit = True
        await serving
    assert (some.status_code, some.json()) == (202, {"replay": "started", "scheduled": 3}), some.text
    assert (none.status_code, none.json()) == (202, {"replay": "nothing_to_replay", "scheduled": 0}), none.text


async def test_the_notifier_refuses_a_since_it_cannot_serve_with_a_4xx_that_intake_passes_on(world: World) -> None:
    _, auth = await new_merchant(world)
    body = {"url": world.http.url(uuid.uuid4().hex), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    link: NotifierLinkSettings = world.intake.state.notifier_link
    merchant_id = await world.notifier_db.fetchval(
        "SELECT merchant_id FROM webhook_endpoints WHERE id = $1", endpoint["id"]
    )
    async with httpx.AsyncClient(
        base_url=link.notifier_url, headers={"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
    ) as notifier:
        path = f"/internal/v1/merchants/{merchant_id}/webhook-endpoints/{endpoint['id']}/replays"
        for since in (NEVER, "0001-01-01T00:00:00+14:00", (datetime.now(UTC) + timedelta(hours=1)).isoformat()):
            answer = await notifier.post(path, json={"since": since})
            assert answer.status_code == 422, (since, answer.text)
        beyond = await notifier.post(path, json={"delivery_id": 2**63})
        assert beyond.status_code == 422, beyond.text

    # Intake's clock a day ahead of the notifier's: a time intake lets through, the notifier refuses.
    clock = world.intake.state.clock
    world.intake.state.clock = lambda: clock() + timedelta(days=1)
    try:
        since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        answer = await world.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/replay", headers=auth, json={"since": since}
        )
    finally:
        world.intake.state.clock = clock
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request", answer.text


async def owner_signed_in(world: World) -> tuple[str, dict[str, str], Person]:
    """A merchant (its id, its API key's header) with an owner who accepted the invite and is signed in to the
    dashboard."""
    email = f"owner-{uuid.uuid4().hex[:8]}@acme.example"
    created = await world.api.post(
        "/v1/merchants",
        json={"name": "Acme", "owner_email": email},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    auth = {"Authorization": f"Bearer {body['api_key']}"}
    return body["id"], auth, await accept_invite(world, body["owner_invite_url"], email)


async def test_the_dashboard_replays_only_a_delivery_the_notifier_has(world: World) -> None:
    _, auth, owner = await owner_signed_in(world)
    body = {"url": world.http.url(uuid.uuid4().hex), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    page = f"/dashboard/webhooks/{endpoint['id']}"

    for _ in range(REPLAYS_PER_HOUR + 1):  # none replays anything, so none counts against the hour's
        unknown = await owner.post_form(page, f"{page}/deliveries/999999/replay", {})
        assert unknown.status_code == 404 and "webhook_delivery_not_found" in unknown.text, unknown.text[:500]
    beyond = await owner.post_form(page, f"{page}/deliveries/{2**63}/replay", {})
    assert beyond.status_code == 422 and "invalid_request" in beyond.text, beyond.text[:500]
    for none in ("0", "-1"):
        refused = await owner.post_form(page, f"{page}/deliveries/{none}/replay", {})
        assert refused.status_code == 422, (none, refused.text[:500])


async def test_a_disabled_endpoint_offers_no_replay_and_a_replay_sent_anyway_says_nothing_was_scheduled(
    world: World,
) -> None:
    """The notifier schedules nothing for a disabled endpoint (its answer: 0), yet the page offered Replay, said
    "Replay scheduled." and took one of the hour's replays."""
    merchant_id, auth, owner = await owner_signed_in(world)
    name = uuid.uuid4().hex
    body = {"url": world.http.url(name), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    await world.feed.publish(succeeded(merchant_id))
    await received(world, name, 1)
    log = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    [delivery] = (await world.api.get(log, headers=auth)).json()["deliveries"]
    page = f"/dashboard/webhooks/{endpoint['id']}"
    replay = f"{page}/deliveries/{delivery['id']}/replay"

    async def replayed() -> str:
        answer = await owner.post_form(page, replay, {})
        assert answer.status_code == 303, answer.text[:500]
        return str((await owner.page(answer.headers["location"])).text)

    assert "Replay scheduled." in await replayed()
    await received(world, name, 2)

    # Disabled at the notifier (it gave up on the endpoint) before intake has heard: the notifier's 0 is told.
    await world.notifier_db.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = $1", endpoint["id"])
    told = await replayed()
    assert "Nothing was scheduled" in told and "Replay scheduled." not in told, told

    patched = await world.api.patch(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth, json={"enabled": False})
    assert patched.status_code == 200, patched.text
    shown = (await owner.page(page)).text
    assert f'action="{replay}"' not in shown, "no Replay button on a disabled endpoint"
    assert "Replays are off while the endpoint is disabled" in shown
    for _ in range(REPLAYS_PER_HOUR):  # a page opened before the endpoint was disabled: none takes an hour's replay
        told = await replayed()
        assert "Nothing was scheduled" in told and "Replay scheduled." not in told, told
    replays = await world.notifier_db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND replay", endpoint["id"]
    )
    assert replays == 1


async def test_an_endpoint_can_be_disabled_changed_and_deleted(world: World) -> None:
    _, auth = await new_merchant(world)
    name = uuid.uuid4().hex
    endpoint = (
        await world.api.post(
            "/v1/webhook-endpoints", headers=auth, json={"url": world.http.url(name), "events": ["refund.succeeded"]}
        )
    ).json()
    patched = await world.api.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth, json={"enabled": False, "events": ["refund.failed"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False and patched.json()["events"] == ["refund.failed"]
    await endpoint_known(world, endpoint["id"], enabled=False, version=2)

    deleted = await world.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth)
    assert deleted.status_code == 204
    await endpoint_known(world, endpoint["id"], deleted=True)
    gone = await world.api.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_endpoint_not_found"

    _, other = await new_merchant(world)
    assert (await world.api.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=other)).status_code == 404


async def test_an_endpoint_refundflow_disabled_shows_why_in_the_api_and_dashboard_until_it_is_enabled(
    world: World,
) -> None:
    merchant_id, auth, owner = await owner_signed_in(world)
    name = uuid.uuid4().hex
    world.http.scripts[name] = [410, 200]
    body = {"url": world.http.url(name), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    await endpoint_known(world, endpoint["id"])
    await world.feed.publish(succeeded(merchant_id))

    async def shown_disabled() -> bool:
        return (await world.api.get(path, headers=auth)).json()["enabled"] is False

    await eventually(shown_disabled, timeout=60)
    shown = (await world.api.get(path, headers=auth)).json()
    assert shown["disabled_reason"] == "the endpoint answered 410 Gone"
    [listed] = (await world.api.get("/v1/webhook-endpoints", headers=auth)).json()["data"]
    assert (listed["enabled"], listed["disabled_reason"]) == (False, "the endpoint answered 410 Gone")
    page = f"/dashboard/webhooks/{endpoint['id']}"
    for shows_it in (page, "/dashboard/webhooks"):
        html = (await owner.page(shows_it)).text
        assert "Disabled by Refundflow: the endpoint answered 410 Gone" in html, shows_it
    assert "Enable endpoint" in (await owner.page(page)).text

    enabled = await owner.post_form(page, f"{page}/enabled", {"enabled": "true"})
    assert enabled.status_code == 303, enabled.text[:500]
    shown = (await world.api.get(path, headers=auth)).json()
    assert (shown["enabled"], shown["disabled_reason"]) == (True, None)
    await endpoint_known(world, endpoint["id"], enabled=True, disabled_reason=None)
    await world.feed.publish(succeeded(merchant_id))
    await received(world, name, 2)


async def test_an_owner_rolls_an_endpoints_signing_secret_in_the_dashboard_and_sees_the_new_one_once(
    world: World,
) -> None:
    _, auth, owner = await owner_signed_in(world)
    body = {"url": world.http.url(uuid.uuid4().hex), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    page = f"/dashboard/webhooks/{endpoint['id']}"
    assert "Roll signing secret" in (await owner.page(page)).text

    rolled = await owner.post_form(page, f"{page}/secret", {})
    assert rolled.status_code == 200, rolled.text[:500]
    [secret] = re.findall(r"whsec_[A-Za-z0-9+/=]+", rolled.text)
    assert secret != endpoint["secret"] and "previous secret also signs until" in rolled.text
    assert "whsec_" not in (await owner.page(page)).text, "shown once"
    await endpoint_known(world, endpoint["id"], version=2)
    sealed = await world.notifier_db.fetchval(
        "SELECT encrypted_secret FROM webhook_endpoints WHERE id = $1", endpoint["id"]
    )
    assert SecretBox(TEST_SECRET_KEY).open(sealed, context=endpoint["id"]) == secret


def _form_key(html: str) -> dict[str, str]:
    """The single-use key of the page's form (one form on the page has one)."""
    return dict(re.findall(r'name="(form_key)" value="([^"]+)"', html))


def sent_twice(owner: Person, action: str, html: str, data: dict[str, Any]) -> Any:
    """The form of the page ``html`` sent twice at once, as a double click sends it."""
    form = {"csrf_token": csrf_of(html), **_form_key(html), **data}
    return asyncio.gather(owner.browser.post(action, data=form), owner.browser.post(action, data=form))


async def test_a_roll_sent_twice_from_one_page_rolls_once_and_the_secret_the_receivers_hold_keeps_signing(
    world: World,
) -> None:
    """A double click (or a reload that sends the form again) rolled twice: the second made the first roll's
    secret, which nobody had seen, the previous one, so the original stopped signing at once, not in 24 hours."""
    _, auth, owner = await owner_signed_in(world)
    body = {"url": world.http.url(uuid.uuid4().hex), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    page = f"/dashboard/webhooks/{endpoint['id']}"
    html = (await owner.page(page)).text

    answers = await sent_twice(owner, f"{page}/secret", html, {})
    again = await owner.browser.post(f"{page}/secret", data={"csrf_token": csrf_of(html), **_form_key(html)})
    shown = set()
    for answer in (*answers, again):
        assert answer.status_code == 200, answer.text[:500]
        shown.update(re.findall(r"whsec_[A-Za-z0-9+/=]+", answer.text))
    [secret] = shown  # each answer shows the one new secret
    assert secret != endpoint["secret"]
    intake_version = "SELECT version FROM intake.webhook_endpoints WHERE id = $1"
    assert await world.notifier_db.fetchval(intake_version, endpoint["id"]) == 2, "rolled once"
    await endpoint_known(world, endpoint["id"], version=2)
    signing = await world.notifier_db.fetchrow(
        "SELECT encrypted_secret, previous_encrypted_secret FROM webhook_endpoints WHERE id = $1", endpoint["id"]
    )
    box = SecretBox(TEST_SECRET_KEY)
    assert box.open(signing["encrypted_secret"], context=endpoint["id"]) == secret
    assert box.open(signing["previous_encrypted_secret"], context=endpoint["id"]) == endpoint["secret"]

    rolled_again = await owner.post_form(page, f"{page}/secret", {})  # the next page's form: a roll of its own
    assert rolled_again.status_code == 200 and secret not in rolled_again.text
    assert await world.notifier_db.fetchval(intake_version, endpoint["id"]) == 3


async def test_an_endpoint_added_twice_from_one_page_is_added_once_and_both_answers_show_its_secret(
    world: World,
) -> None:
    _, auth, owner = await owner_signed_in(world)
    html = (await owner.page("/dashboard/webhooks")).text
    form = {"url": world.http.url(uuid.uuid4().hex), "events": "refund.succeeded"}
    answers = await sent_twice(owner, "/dashboard/webhooks", html, form)
    shown = set()
    for answer in answers:
        assert answer.status_code == 200, answer.text[:500]
        shown.update(re.findall(r"whsec_[A-Za-z0-9+/=]+", answer.text))
    [secret] = shown
    [added] = (await world.api.get("/v1/webhook-endpoints", headers=auth)).json()["data"]
    await endpoint_known(world, added["id"], version=1)
    sealed = await world.notifier_db.fetchval(
        "SELECT encrypted_secret FROM webhook_endpoints WHERE id = $1", added["id"]
    )
    assert SecretBox(TEST_SECRET_KEY).open(sealed, context=added["id"]) == secret


async def test_an_api_key_form_sent_again_creates_no_second_key_and_settings_answers_show_the_email_previews(
    world: World,
) -> None:
    """The answer to Create API key said the notifier had not answered (it had not been asked) and to reload, which
    sent the form again and made a second live key; a double click made two, the first never shown."""
    _, auth, owner = await owner_signed_in(world)
    html = (await owner.page("/dashboard/settings")).text
    assert 'class="email-preview"' in html, "the notifier answers"
    answers = await sent_twice(owner, "/dashboard/settings/api-keys", html, {"name": "billing"})
    reloaded = await owner.browser.post(
        "/dashboard/settings/api-keys", data={"csrf_token": csrf_of(html), **_form_key(html), "name": "billing"}
    )
    shown = []
    for answer in (*answers, reloaded):
        assert answer.status_code == 200, answer.text[:500]
        shown += re.findall(r'id="new-api-key">(rfk_[^<]+)<', answer.text)
        assert "did not answer" not in answer.text and 'class="email-preview"' in answer.text
    assert len(shown) == 1, "one key, shown once"
    repeats = [a for a in (*answers, reloaded) if "new-api-key" not in a.text]
    assert all("This form already created the API key" in a.text for a in repeats)
    keys = (await world.api.get("/v1/api-keys", headers=auth)).json()["data"]
    assert [k["name"] for k in keys] == ["default", "billing"]

    refused = await owner.post_form("/dashboard/settings", "/dashboard/settings/notifications", {"reply_to": "x"})
    assert refused.status_code == 422 and "Check the reply to" in refused.text
    assert "did not answer" not in refused.text and 'class="email-preview"' in refused.text


async def test_bad_endpoint_bodies_are_refused_and_nothing_is_written(world: World) -> None:
    _, auth = await new_merchant(world)
    for body in (
        {"url": "not a url", "events": ["refund.succeeded"]},
        {"url": "https://example.com/hook", "events": ["refund.teleported"]},
        {"url": "https://example.com/hook", "events": []},
    ):
        response = await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert (await world.api.get("/v1/webhook-endpoints", headers=auth)).json()["data"] == []


async def test_team_channels_are_set_with_put_and_reach_the_notifier(world: World) -> None:
    merchant_id, auth = await new_merchant(world)
    slack = uuid.uuid4().hex
    body = {"team_email": "team@acme.example", "slack_webhook_url": world.http.url(slack)}
    response = await world.api.put("/v1/notification-settings", headers=auth, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["team_email"] == "team@acme.example"
    shown = (await world.api.get("/v1/notification-settings", headers=auth)).json()["slack_webhook_url"]
    assert shown is not None and slack not in shown  # sealed: never shown in clear again

    async def stored() -> bool:
        row = await world.notifier_db.fetchrow("SELECT * FROM merchant_settings WHERE merchant_id = $1", merchant_id)
        return row is not None and row["team_email"] == "team@acme.example"

    await eventually(stored, timeout=60)
    sealed = await world.notifier_db.fetchval(
        "SELECT sealed_slack_webhook_url FROM merchant_settings WHERE merchant_id = $1", merchant_id
    )
    assert slack not in sealed, "the Slack URL, a credential, rests sealed"
    assert SecretBox(TEST_SECRET_KEY).open(sealed, context=merchant_id) == body["slack_webhook_url"]
    bad = await world.api.put("/v1/notification-settings", headers=auth, json={"team_email": "nope"})
    assert bad.status_code == 422
    assert json.loads(bad.text)["error"]["code"] == "invalid_request"


async def test_without_a_secret_key_webhooks_are_refused_with_503_and_nothing_is_written(world: World) -> None:
    _, auth = await new_merchant(world)
    configured = world.intake.state.settings
    world.intake.state.settings = configured.model_copy(update={"webhook_secret_key": None})
    try:
        response = await world.api.post(
            "/v1/webhook-endpoints", headers=auth, json={"url": "https://example.com/h", "events": ["refund.failed"]}
        )
    finally:
        world.intake.state.settings = configured
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "webhook_signing_unavailable"
    assert (await world.api.get("/v1/webhook-endpoints", headers=auth)).json()["data"] == []


async def test_a_delivery_whose_event_is_older_than_replays_reach_is_not_replayed(world: World) -> None:
    """A replay since a time reaches 30 days back, but one delivery's event was replayed whatever its age: each replay
    a new delivery that kept the event (the customer's address, amounts, notes) from retention another 30 days, and
    sent it to whatever URL the endpoint has now. Refused as a replay since then is, spending none of the hour's."""
    merchant_id, auth, owner = await owner_signed_in(world)
    name = uuid.uuid4().hex
    body = {"url": world.http.url(name), "events": ["refund.succeeded"]}
    endpoint = (await world.api.post("/v1/webhook-endpoints", headers=auth, json=body)).json()
    await endpoint_known(world, endpoint["id"])
    event = await world.feed.publish(succeeded(merchant_id))
    await received(world, name, 1)
    [delivery] = (await world.api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=auth)).json()[
        "deliveries"
    ]
    aged = "UPDATE webhook_events SET occurred_at = now() - $2::interval WHERE event_id = $1"
    await world.notifier_db.execute(aged, event.id, timedelta(days=30, minutes=1))

    replay = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/replay"
    for _ in range(REPLAYS_PER_HOUR):
        refused = await world.api.post(replay, headers=auth)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "replay_window_exceeded", refused.text
    page = f"/dashboard/webhooks/{endpoint['id']}"
    shown = await owner.post_form(page, f"{page}/deliveries/{delivery['id']}/replay", {})
    assert shown.status_code == 422 and "replay_window_exceeded" in shown.text, shown.text[:500]
    replays = "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND replay"
    assert await world.notifier_db.fetchval(replays, endpoint["id"]) == 0

    await world.notifier_db.execute(aged, event.id, timedelta(days=29))
    allowed = await world.api.post(replay, headers=auth)
    assert (allowed.status_code, allowed.json()) == (202, {"scheduled": 1}), "the refusals spent none of the hour's"
    await received(world, name, 2)
