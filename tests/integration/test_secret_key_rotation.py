"""Rotating secrets. WEBHOOK_SECRET_KEYS: add the new key first, intake re-seals what the old one sealed and tells
the notifier, `refundflow secret-keys` says when nothing needs the old key any more, and then it is removed. An
endpoint's signing secret: rolled, the new one signs beside the previous one for an overlap, then alone.

Intake and the notifier run in-process on one database and broker and are restarted with each key ring, as an
operator would; a real HTTP receiver verifies each webhook with the secret intake showed once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.secret_box import SecretBox, UnknownKeyId, generate_key
from tests.cli.cli_worker import CliWorker
from tests.cli.refundflow_stack import CliResult
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import EventFeed, notifier_settings, running_notifier, succeeded
from tests.support.notifier_receivers import HttpReceiver, http_receiver, smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
ADMIN_TOKEN = "test-admin-token"
OLD, NEW = generate_key(), generate_key()
OLD_RING, BOTH_RINGS, NEW_RING = f"old:{OLD}", f"new:{NEW},old:{OLD}", f"new:{NEW}"


@dataclass
class Stack:
    api: httpx.AsyncClient
    feed: EventFeed
    notifier_db: asyncpg.Pool


@dataclass
class World:
    database_url: str
    kafka: str
    smtp_port: int
    http: HttpReceiver

    @asynccontextmanager
    async def running(
        self, ring: str, *, notifier: dict[str, Any] | None = None, intake: dict[str, Any] | None = None
    ) -> AsyncIterator[Stack]:
        """Intake and the notifier, started with this key ring (intake last: it re-seals as it starts)."""
        settings = notifier_settings(
            self.database_url, self.kafka, self.smtp_port, webhook_secret_keys=ring, **(notifier or {})
        )
        app = create_intake(
            IntakeSettings(
                database_url=self.database_url,
                kafka_bootstrap_servers=self.kafka,
                topic_prefix=settings.topic_prefix,
                refundflow_admin_token=ADMIN_TOKEN,
                webhook_secret_keys=ring,
                refundflow_allow_private_webhook_urls=True,  # the receivers listen on 127.0.0.1
                **(intake or {}),
            )
        )
        async with (
            running_notifier(settings) as (feed, notifier_db),
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as api,
        ):
            yield Stack(api, feed, notifier_db)


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    with smtp_server() as (_, smtp_port):
        async with http_receiver() as http:
            yield World(await create_database(postgres_url), kafka_bootstrap, smtp_port, http)


@pytest.fixture(scope="module")
def cli() -> Iterator[CliWorker]:
    running = CliWorker()
    yield running
    running.close()


async def secret_keys(cli: CliWorker, world: World, *args: str) -> CliResult:
    env = {"DATABASE_URL": world.database_url, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    return CliResult(*await cli.invoke(["secret-keys", "--json", *args], env))


async def endpoint_to(stack: Stack, auth: dict[str, str], url: str) -> dict[str, Any]:
    """A new endpoint of the merchant ``auth`` names, for refund.succeeded, as the API answers it (its secret once)."""
    made = await stack.api.post(
        "/v1/webhook-endpoints", headers=auth, json={"url": url, "events": ["refund.succeeded"]}
    )
    assert made.status_code == 201, made.text
    json: dict[str, Any] = made.json()
    return json


async def signed_webhook_arrives(world: World, stack: Stack, merchant_id: str, name: str, secret: str) -> None:
    before = len(world.http.received[name])
    event = await stack.feed.publish(succeeded(merchant_id))

    async def arrived() -> bool:
        return len(world.http.received[name]) > before

    await eventually(arrived, timeout=60)
    delivery = world.http.received[name][-1]
    assert Webhook(secret).verify(delivery.body, delivery.headers)["id"] == str(event.id)


async def test_the_command_counts_what_still_needs_the_retiring_key(world: World, cli: CliWorker) -> None:
    async with world.running(OLD_RING) as stack:
        created = await stack.api.post(
            "/v1/merchants", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
        made = await stack.api.post(
            "/v1/webhook-endpoints", headers=auth, json={"url": world.http.url("x"), "events": ["refund.failed"]}
        )
        assert made.status_code == 201, made.text

        async def known() -> bool:
            return bool(
                await stack.notifier_db.fetchval(
                    "SELECT count(*) FROM webhook_endpoints WHERE id = $1", made.json()["id"]
                )
            )

        await eventually(known, timeout=60)
    report = await secret_keys(cli, world, "--retiring", "old")
    assert report.exit_code == 1, "the old key is still needed: removing it now would break signing"
    counted = {(row["where"], row["key_id"]): row["count"] for row in report.json()["sealed"]}
    assert report.json()["still_needing_retiring_key"] >= 2, "intake's copy and the notifier's"
    assert counted[("intake webhook endpoint secrets", "old")] >= 1
    assert counted[("notifier webhook endpoint secrets", "old")] >= 1


async def test_the_old_key_is_removed_once_the_command_says_nothing_needs_it(world: World, cli: CliWorker) -> None:
    name = uuid.uuid4().hex
    slack_url = world.http.url(f"slack-{name}")
    async with world.running(OLD_RING) as stack:
        created = await stack.api.post(
            "/v1/merchants", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        merchant_id, auth = created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}
        endpoint = await endpoint_to(stack, auth, world.http.url(name))
        saved = await stack.api.put("/v1/notification-settings", headers=auth, json={"slack_webhook_url": slack_url})
        assert saved.status_code == 200, saved.text
        # Another endpoint whose secret was rolled: its previous one signs too, for 24 h, and is sealed again with it.
        rolled_name = uuid.uuid4().hex
        rolled = await endpoint_to(stack, auth, world.http.url(rolled_name))
        previous = rolled["secret"]
        rolled["secret"] = (await stack.api.post(f"/v1/webhook-endpoints/{rolled['id']}/secret", headers=auth)).json()[
            "secret"
        ]

        async def known() -> bool:
            return bool(
                await stack.notifier_db.fetchval(
                    "SELECT count(*) = 2 FROM webhook_endpoints WHERE id = ANY($1) AND version = 1 + (id = $2)::int",
                    [endpoint["id"], rolled["id"]],
                    rolled["id"],
                )
            )

        await eventually(known, timeout=60)
        await signed_webhook_arrives(world, stack, merchant_id, name, endpoint["secret"])

    async with world.running(BOTH_RINGS) as stack:  # the new key first, the old one still listed

        async def resealed() -> bool:
            secret = await stack.notifier_db.fetchval(
                "SELECT encrypted_secret FROM webhook_endpoints WHERE id = $1", endpoint["id"]
            )
            slack = await stack.notifier_db.fetchval(
                "SELECT sealed_slack_webhook_url FROM merchant_settings WHERE merchant_id = $1", merchant_id
            )
            rolled_from = await stack.notifier_db.fetchval(
                "SELECT previous_encrypted_secret FROM webhook_endpoints WHERE id = $1", rolled["id"]
            )
            return all(sealed and sealed.startswith("v2.new.") for sealed in (secret, slack, rolled_from))

        await eventually(resealed, timeout=60)
        intake_versions = await stack.notifier_db.fetchval(
            "SELECT version FROM intake.webhook_endpoints WHERE id = $1", endpoint["id"]
        )
        assert intake_versions == 2, "re-sealing is a new version of the endpoint"
        await signed_webhook_arrives(world, stack, merchant_id, name, endpoint["secret"])
        report = await secret_keys(cli, world, "--retiring", "old")
        assert report.exit_code == 0, report.stdout + report.stderr
        assert report.json()["still_needing_retiring_key"] == 0

    async with world.running(NEW_RING) as stack:  # the old key removed
        await signed_webhook_arrives(world, stack, merchant_id, name, endpoint["secret"])
        await signed_webhook_arrives(world, stack, merchant_id, rolled_name, rolled["secret"])
        last = world.http.received[rolled_name][-1]
        Webhook(previous).verify(last.body, last.headers)  # still in its overlap
        sealed = await stack.notifier_db.fetchval(
            "SELECT sealed_slack_webhook_url FROM merchant_settings WHERE merchant_id = $1", merchant_id
        )
        assert SecretBox(NEW_RING).open(sealed, context=merchant_id) == slack_url
        shown = (await stack.api.get("/v1/notification-settings", headers=auth)).json()["slack_webhook_url"]
        assert shown.startswith("http://127.0.0.1/"), "intake opens its own copy with the new key too"
        with pytest.raises(UnknownKeyId):
            SecretBox(OLD_RING).open(sealed, context=merchant_id)


OVERLAP_SECONDS = 15.0  # the previous secret signs this long after a roll (24 h unless set)
RETRY_AFTER_SECONDS = 4.0  # long enough for the roll to reach the notifier between two attempts


async def test_a_rolled_secret_signs_beside_the_previous_one_for_the_overlap_then_alone(world: World) -> None:
    stack_settings: dict[str, dict[str, Any]] = {
        "notifier": {"webhook_retry_schedule_seconds": [0, RETRY_AFTER_SECONDS]},
        "intake": {"webhook_secret_overlap_hours": OVERLAP_SECONDS / 3600},
    }
    async with world.running(NEW_RING, **stack_settings) as stack:
        created = await stack.api.post(
            "/v1/merchants", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        merchant_id, auth = created.json()["id"], {"Authorization": f"Bearer {created.json()['api_key']}"}
        name = uuid.uuid4().hex
        world.http.scripts[name] = [500, 200]
        endpoint = await endpoint_to(stack, auth, world.http.url(name))
        previous = endpoint["secret"]

        async def known(version: int) -> bool:
            found = await stack.notifier_db.fetchval(
                "SELECT version FROM webhook_endpoints WHERE id = $1", endpoint["id"]
            )
            return bool(found == version)

        await eventually(lambda: known(1), timeout=60)
        await stack.feed.publish(succeeded(merchant_id))

        async def attempts(count: int) -> bool:
            return len(world.http.received[name]) >= count

        await eventually(lambda: attempts(1), timeout=60)  # answered 500: retried later
        rolled = await stack.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/secret", headers=auth)
        assert rolled.status_code == 200, rolled.text
        secret = rolled.json()["secret"]
        assert secret.startswith("whsec_") and secret != previous
        overlap_ends = datetime.fromisoformat(rolled.json()["previous_secret_expires_at"])
        shown = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth)).json()
        assert (
            "secret" not in shown and shown["previous_secret_expires_at"] == rolled.json()["previous_secret_expires_at"]
        )
        await eventually(lambda: known(2), timeout=60)

        await eventually(lambda: attempts(2), timeout=60)
        retried = world.http.received[name][1]
        assert len(retried.headers["webhook-signature"].split(" ")) == 2, "two v1 signatures during the overlap"
        for either in (previous, secret):
            Webhook(either).verify(retried.body, retried.headers)

        async def delivered() -> bool:  # recorded once the receiver answered: a moment after it got the call
            status = "SELECT status FROM webhook_deliveries WHERE endpoint_id = $1"
            return bool(await stack.notifier_db.fetchval(status, endpoint["id"]) == "succeeded")

        await eventually(delivered, timeout=30)  # the roll cancels nothing that was still to be delivered

        async def overlap_over() -> bool:
            return datetime.now(UTC) > overlap_ends

        await eventually(overlap_over, timeout=OVERLAP_SECONDS + 30)
        await signed_webhook_arrives(world, stack, merchant_id, name, secret)
        alone = world.http.received[name][-1]
        assert len(alone.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError):
            Webhook(previous).verify(alone.body, alone.headers)

        other = await stack.api.post(
            "/v1/merchants", json={"name": "Other"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        foreign = {"Authorization": f"Bearer {other.json()['api_key']}"}
        refused = await stack.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/secret", headers=foreign)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "webhook_endpoint_not_found"
