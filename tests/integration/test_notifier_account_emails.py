"""Invites and password resets reach the person by email, with the one-time link that travelled sealed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from refundflow_shared.events import PasswordResetRequested, TeamMemberInvited, dlq_topic, topic_for
from refundflow_shared.secret_box import SecretBox
from tests.conftest import create_database
from tests.integration.test_notifier_emails import World, html_of, mails_to, text_of
from tests.support.kafka_reader import read_topic
from tests.support.notifier_harness import TEST_SECRET_KEY, notifier_settings, running_notifier
from tests.support.notifier_receivers import http_receiver, smtp_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


class AccountWorld(World):
    kafka: str
    prefix: str


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[AccountWorld]:
    with smtp_server() as (mail, smtp_port):
        async with http_receiver() as http:
            settings = notifier_settings(await create_database(postgres_url), kafka_bootstrap, smtp_port)
            async with running_notifier(settings) as (feed, pool):
                world = AccountWorld(feed, pool, mail, http)
                world.kafka, world.prefix = kafka_bootstrap, settings.topic_prefix
                yield world


def _sealed(url: str, user_id: str) -> str:
    return SecretBox(TEST_SECRET_KEY).seal(url, context=user_id)


async def test_an_invite_email_carries_the_link_and_who_invited_whom(world: AccountWorld) -> None:
    user_id, email = f"usr_{uuid.uuid4().hex[:10]}", f"new.{uuid.uuid4().hex[:8]}@acme.example"
    url = f"https://refunds.example/dashboard/invite/{uuid.uuid4().hex}"
    await world.feed.publish(
        TeamMemberInvited(
            merchant_id=f"mer_{uuid.uuid4().hex[:8]}",
            user_id=user_id,
            email=email,
            sealed_url=_sealed(url, user_id),
            expires_at=datetime.now(UTC) + timedelta(hours=72),
            merchant_name="Acme Software",
            role="approver",
            invited_by="Olive Owner <olive@acme.example>",
        )
    )
    [message] = await mails_to(world, email)
    assert message["Subject"] == "You are invited to Acme Software's refund dashboard"
    assert message["From"].startswith("Refundflow <")
    assert url in text_of(message) and f'href="{url}"' in html_of(message)
    assert "Olive Owner" in text_of(message) and "an approver" in text_of(message)
    stored = await world.pool.fetchval("SELECT count(*) FROM messages WHERE recipient = $1", email)
    assert stored == 1


async def test_a_reset_link_sealed_for_someone_else_is_dead_lettered_and_sends_nothing(world: AccountWorld) -> None:
    email = f"victim.{uuid.uuid4().hex[:8]}@acme.example"
    url = f"https://refunds.example/dashboard/reset-password/{uuid.uuid4().hex}"
    forged = PasswordResetRequested(
        merchant_id="mer_x",
        user_id="usr_victim",
        email=email,
        sealed_url=_sealed(url, "usr_attacker"),  # sealed for another account: it does not open for this one
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await world.feed.publish(forged)
    topic = dlq_topic(topic_for("password_reset.requested", world.prefix))
    records = await read_topic(world.kafka, topic, expected=1, timeout=60)
    assert [json.loads(r.value or b"")["user_id"] for r in records] == ["usr_victim"]
    assert world.mail.to(email) == []
    assert await world.pool.fetchval("SELECT count(*) FROM messages WHERE recipient = $1", email) == 0
