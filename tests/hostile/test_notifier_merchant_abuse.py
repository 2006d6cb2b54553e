"""What a merchant's own configuration can do to the notifier, and what the notifier keeps and for how long.

A sender name with line breaks loses nothing; more endpoints than allowed are cut, not fanned out; replays
reach back only the retention period, in batches, and never pile up; a disabled endpoint's backlog is cancelled
rather than re-sent, even an event a batch was queuing for it as it was disabled; and retention prunes finished
work while keeping everything still live.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from refundflow_notifier import webhook_replays, webhook_store
from refundflow_notifier.delivery_log import replay_delivery
from refundflow_notifier.webhook_signing import new_signing_secret
from refundflow_shared.database import transaction_holding
from refundflow_shared.events import (
    Event,
    RefundRejected,
    RefundRequested,
    TeamAlertRaised,
    WebhookEndpointConfigured,
)
from refundflow_shared.secret_box import SecretBox
from tests.conftest import create_database
from tests.support.notifier_harness import (
    TEST_SECRET_KEY,
    EventFeed,
    configure_endpoint,
    configure_team,
    notifier_settings,
    running_notifier,
)
from tests.support.notifier_receivers import CapturingSmtpHandler, HttpReceiver, http_receiver, smtp_server
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
CAP = 2


class World:
    def __init__(self, feed: EventFeed, pool: asyncpg.Pool, mail: CapturingSmtpHandler, http: HttpReceiver) -> None:
        self.feed, self.pool, self.mail, self.http = feed, pool, mail, http

    async def endpoint(self, merchant_id: str, name: str, status: int = 200) -> str:
        self.http.scripts[name] = [status]
        return await configure_endpoint(
            self.feed, self.pool, merchant_id, self.http.url(name), ["refund.requested"], secret=new_signing_secret()
        )

    async def attempted(self, endpoint_id: str, deliveries: int) -> None:
        async def done() -> bool:
            count = await self.pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND attempts > 0"
                " AND (status <> 'pending' OR locked_until IS NULL)",
                endpoint_id,
            )
            return bool(count >= deliveries)

        await eventually(done)


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    with smtp_server() as (mail, smtp_port):
        async with http_receiver() as http:
            settings = notifier_settings(
                await create_database(postgres_url),
                kafka_bootstrap,
                smtp_port,
                webhook_max_endpoints_per_event=CAP,
                webhook_retry_schedule_seconds=[0, 3600],  # a failed first attempt stays pending for an hour
                retention_interval_seconds=0.2,
            )
            async with running_notifier(settings) as (feed, pool):
                yield World(feed, pool, mail, http)


def merchant() -> str:
    return f"mer_{uuid.uuid4().hex[:10]}"


def requested(merchant_id: str, customer: str = "ada@example.com") -> RefundRequested:
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


async def test_a_sender_name_with_line_breaks_loses_no_email_and_no_webhook(world: World) -> None:
    m, hook, to = merchant(), uuid.uuid4().hex, f"ada.{uuid.uuid4().hex[:8]}@example.com"
    await configure_team(
        world.feed,
        world.pool,
        m,
        sender_name="Acme\r\nBcc: everyone@victim.example",
        reply_to="support@acme.example\r\nX-Injected: yes",
    )
    await world.endpoint(m, hook)
    await world.feed.publish(requested(m, to))

    async def both_out() -> bool:
        return bool(world.mail.to(to)) and bool(world.http.received[hook])

    await eventually(both_out)
    [email] = world.mail.to(to)
    assert email["From"].addresses[0].display_name == "Acme Bcc: everyone@victim.example via Refundflow"
    assert email["Bcc"] is None and email["X-Injected"] is None and email["Reply-To"] is None


async def test_a_sender_name_saved_as_an_encoded_word_shows_as_typed_not_as_another_sender(world: World) -> None:
    m, to = merchant(), f"ada.{uuid.uuid4().hex[:8]}@example.com"
    fake = "=?utf-8?b?IlBheVBhbCIgPHNlcnZpY2VAcGF5cGFsLmNvbT4=?="  # '"PayPal" <service@paypal.com>', encoded
    await configure_team(world.feed, world.pool, m, sender_name=fake)  # saved before intake refused it
    await world.feed.publish(requested(m, to))

    async def out() -> bool:
        return bool(world.mail.to(to))

    await eventually(out)
    [email] = world.mail.to(to)
    [sender] = email["From"].addresses
    assert sender.addr_spec == "refunds@refundflow.test"
    # the literal text, in our own encoded words (Python's parser keeps a space where they join)
    assert sender.display_name.replace(" ", "") == f"{fake}viaRefundflow"


async def test_more_endpoints_than_allowed_are_cut_and_the_team_is_told_once(world: World) -> None:
    m, slack = merchant(), uuid.uuid4().hex
    await configure_team(world.feed, world.pool, m, slack=world.http.url(slack))
    endpoints = [await world.endpoint(m, uuid.uuid4().hex) for _ in range(CAP + 1)]
    events = [await world.feed.publish(requested(m)) for _ in range(2)]

    async def both_queued() -> bool:
        count = await world.pool.fetchval(
            "SELECT count(DISTINCT event_id) FROM webhook_deliveries WHERE endpoint_id = ANY($1)", endpoints
        )
        return bool(count == len(events))

    await eventually(both_queued)
    per_event = await world.pool.fetch(
        "SELECT count(*) AS n FROM webhook_deliveries WHERE endpoint_id = ANY($1) GROUP BY event_id", endpoints
    )
    assert [r["n"] for r in per_event] == [CAP, CAP]

    async def alerted() -> bool:
        return any("skipped" in json.loads(r.body)["text"] for r in world.http.received[slack])

    await eventually(alerted)
    skipped = [r for r in world.http.received[slack] if "skipped" in json.loads(r.body)["text"]]
    assert len(skipped) == 1, "once a day, not once per event"


async def test_disabling_an_endpoint_cancels_its_backlog_and_reenabling_does_not_resend_it(world: World) -> None:
    m, hook = merchant(), uuid.uuid4().hex
    endpoint = await world.endpoint(m, hook, status=500)
    for _ in range(2):
        await world.feed.publish(requested(m))
    await world.attempted(endpoint, 2)  # each failed once and waits an hour for its retry

    await reconfigure(world, m, endpoint, world.http.url(hook), enabled=False, version=2)

    async def cancelled() -> bool:
        statuses = await world.pool.fetch("SELECT status FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
        return [r["status"] for r in statuses] == ["cancelled", "cancelled"]

    await eventually(cancelled)
    world.http.scripts[hook] = [200]
    received, _ = await enabled_again_with_a_marker(world, m, endpoint, hook)
    assert len(received) == 3, "two first attempts, then only the new event"


@pytest.mark.parametrize("first", ["queued", "disabled"])
@pytest.mark.parametrize("disabled_by", ["the merchant", "failures"])
async def test_an_event_queued_while_its_endpoint_is_disabled_is_cancelled_with_the_backlog(
    world: World, first: str, disabled_by: str
) -> None:
    # A batch that read the endpoint as enabled queues its event while the disable commits (or just before): the
    # disable's cancel must take it too, or it waits for ever and is sent once the endpoint is enabled again.
    m, hook = merchant(), uuid.uuid4().hex
    endpoint = await world.endpoint(m, hook)
    raced = Event.wrap(requested(m), source="refundflow/test", sequence=1)

    async def queue(conn: asyncpg.Connection) -> None:
        await webhook_store.queue_events(conn, [(raced, None)], CAP)

    async def disable(conn: asyncpg.Connection) -> None:
        if disabled_by == "failures":
            assert await webhook_store.disable_endpoint(conn, endpoint, "2 events in a row could not be delivered")
        else:
            await webhook_store.apply_endpoint(
                conn, endpoint_state(m, endpoint, world.http.url(hook), False, 2), datetime.now(UTC)
            )

    hold, race = (queue, disable) if first == "queued" else (disable, queue)
    async with (
        world.pool.acquire() as claims,
        world.pool.acquire() as holder,
        world.pool.acquire() as racer,
        world.pool.acquire() as onlooker,
    ):
        # No worker claims meanwhile: sent before the disable commits, the event would rightly be sent.
        async with transaction_holding(claims, "notifier.webhook_claim"):
            async with holder.transaction():
                await hold(holder)

                async def racing() -> None:
                    async with racer.transaction():
                        await race(racer)

                raced_task = asyncio.create_task(racing())
                pid = racer.get_server_pid()

                async def waiting_or_done() -> bool:
                    state = await onlooker.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
                    return raced_task.done() or state == "Lock"

                await eventually(waiting_or_done, timeout=10)
            await asyncio.wait_for(raced_task, timeout=10)

    received, marker = await enabled_again_with_a_marker(world, m, endpoint, hook)
    assert received == [marker]
    left = await world.pool.fetchval("SELECT status FROM webhook_deliveries WHERE event_id = $1", raced.id)
    assert left in (None, "cancelled"), "nothing of the raced event is left to send"


# A replay since a time recorded first is walked later, by the replay job, which then finds the endpoint disabled
# and queues nothing (test_notifier_webhook_replays): only its request races the disable.
@pytest.mark.parametrize(
    ("replay", "first"), [("one delivery", "replayed"), ("one delivery", "disabled"), ("since a time", "disabled")]
)
async def test_a_replay_made_while_its_endpoint_is_disabled_is_cancelled_with_the_backlog(
    world: World, replay: str, first: str
) -> None:
    # A replay that read the endpoint as enabled queued its delivery after the disable's cancel had run: it waited
    # for ever and was sent once the endpoint was enabled again.
    m, hook = merchant(), uuid.uuid4().hex
    endpoint = await world.endpoint(m, hook)
    sent = await world.feed.publish(requested(m))
    await world.attempted(endpoint, 1)
    delivery = await world.pool.fetchval("SELECT id FROM webhook_deliveries WHERE event_id = $1", sent.id)
    since = datetime.now(UTC) - timedelta(hours=1)

    async def replay_it(conn: asyncpg.Connection) -> None:
        if replay == "one delivery":
            assert await replay_delivery(conn, endpoint, delivery, reach=timedelta(days=30)) in (0, 1)
        else:
            assert await webhook_replays.request_replay(conn, endpoint, since, reach=timedelta(days=30)) in (
                "started",
                "nothing_to_replay",
            )

    async def disable(conn: asyncpg.Connection) -> None:
        await webhook_store.apply_endpoint(
            conn, endpoint_state(m, endpoint, world.http.url(hook), False, 2), datetime.now(UTC)
        )

    hold, race = (replay_it, disable) if first == "replayed" else (disable, replay_it)
    async with (
        world.pool.acquire() as claims,
        world.pool.acquire() as holder,
        world.pool.acquire() as racer,
        world.pool.acquire() as onlooker,
    ):
        async with transaction_holding(claims, "notifier.webhook_claim"):  # no worker sends it meanwhile
            async with holder.transaction():
                await hold(holder)

                async def racing() -> None:
                    async with racer.transaction():
                        await race(racer)

                raced_task = asyncio.create_task(racing())

                async def waiting_or_done() -> bool:
                    if raced_task.done():
                        return True
                    # Waiting for the held transaction's row lock (the replay runs on a connection of its own).
                    waits = await onlooker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event IN ('transactionid', 'tuple')"
                        " AND datname = current_database()"
                    )
                    return bool(waits)

                await eventually(waiting_or_done, timeout=10)
            await asyncio.wait_for(raced_task, timeout=10)

    received, marker = await enabled_again_with_a_marker(world, m, endpoint, hook)
    assert received == [str(sent.id), marker]
    left = await world.pool.fetch("SELECT status FROM webhook_deliveries WHERE event_id = $1 AND replay", sent.id)
    assert {r["status"] for r in left} <= {"cancelled"}, "nothing of the replay is left to send"


async def test_a_replay_reaches_back_only_the_retention_period_and_repeating_it_adds_nothing(world: World) -> None:
    m = merchant()
    endpoint = await world.endpoint(m, uuid.uuid4().hex, status=500)
    events = [await world.feed.publish(requested(m)) for _ in range(5)]
    await world.attempted(endpoint, len(events))
    await world.pool.execute(
        "UPDATE webhook_events SET occurred_at = now() - interval '40 days' WHERE event_id = ANY($1)",
        [e.id for e in events[:2]],
    )
    since = datetime(1970, 1, 1, tzinfo=UTC)

    assert await walked_replay(world.pool, endpoint, since) == 3
    assert await walked_replay(world.pool, endpoint, since) == 0, "still pending"
    replayed = await world.pool.fetch(
        "SELECT event_id FROM webhook_deliveries WHERE endpoint_id = $1 AND replay", endpoint
    )
    assert sorted(r["event_id"] for r in replayed) == sorted(e.id for e in events[2:])


async def walked_replay(pool: asyncpg.Pool, endpoint_id: str, since: datetime) -> int:
    """Ask for a replay since ``since``; once the notifier's replay job has walked it, how many it queued."""
    async with pool.acquire() as conn, conn.transaction():
        assert await webhook_replays.request_replay(conn, endpoint_id, since, reach=timedelta(days=30)) == "started"
    replay_id = await pool.fetchval("SELECT max(id) FROM webhook_replays WHERE endpoint_id = $1", endpoint_id)

    async def walked() -> bool:
        return await pool.fetchval("SELECT finished_at FROM webhook_replays WHERE id = $1", replay_id) is not None

    await eventually(walked)
    scheduled: int = await pool.fetchval("SELECT scheduled FROM webhook_replays WHERE id = $1", replay_id)
    return scheduled


async def test_retention_prunes_finished_work_and_keeps_what_is_still_live(world: World) -> None:
    m, to = merchant(), f"ada.{uuid.uuid4().hex[:8]}@example.com"
    delivered, failing = await world.endpoint(m, uuid.uuid4().hex), await world.endpoint(m, uuid.uuid4().hex, 500)
    await world.feed.publish(requested(m, to))
    unsubscribed = await world.feed.publish(  # no endpoint wants it: kept for replays, then pruned
        RefundRejected(merchant_id=m, payment_id="pay_r", refund_id="ref_r", customer_email=to, note="no")
    )
    await world.attempted(delivered, 1)
    await world.attempted(failing, 1)
    await eventually(lambda: _sent(world, m, 2))
    bodies = await world.pool.fetch("SELECT body FROM messages WHERE merchant_id = $1", m)
    assert [r["body"] for r in bodies] == [None, None], "an email's content is wiped once it is sent"

    await world.pool.execute(
        "UPDATE webhook_deliveries SET finished_at = now() - interval '31 days' WHERE endpoint_id = $1", delivered
    )
    await world.pool.execute(
        "UPDATE webhook_events SET occurred_at = now() - interval '31 days' WHERE merchant_id = $1", m
    )
    await world.pool.execute("UPDATE messages SET finished_at = now() - interval '8 days' WHERE merchant_id = $1", m)

    async def pruned() -> bool:
        left = await world.pool.fetchrow(
            "SELECT (SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1) AS deliveries,"
            " (SELECT count(*) FROM webhook_events WHERE event_id = $2) AS unsubscribed,"
            " (SELECT count(*) FROM messages WHERE merchant_id = $3) AS messages",
            delivered,
            unsubscribed.id,
            m,
        )
        assert left is not None
        return (left["deliveries"], left["unsubscribed"], left["messages"]) == (0, 0, 0)

    await eventually(pruned)
    kept = await world.pool.fetchrow(
        "SELECT d.status, (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id) AS attempts,"
        " (SELECT count(*) FROM webhook_events ev WHERE ev.event_id = d.event_id) AS event"
        " FROM webhook_deliveries d WHERE d.endpoint_id = $1",
        failing,
    )
    assert kept is not None and (kept["status"], kept["attempts"], kept["event"]) == ("pending", 1, 1)


async def test_an_alert_held_for_settings_that_never_come_goes_after_the_hold(world: World) -> None:
    """No settings heard of: the alert is held for them (they may be on their way, on another partition), then
    pruned TEAM_ALERT_HOLD_DAYS (7) after it happened, not kept for ever."""
    old, young = merchant(), merchant()
    for m in (old, young):
        await world.feed.publish(TeamAlertRaised(merchant_id=m, kind="refund_needs_attention", title="Held"))

    async def held(merchant_id: str) -> int:
        count: int = await world.pool.fetchval(
            "SELECT count(*) FROM held_team_alerts WHERE merchant_id = $1", merchant_id
        )
        return count

    async def both_held() -> bool:
        return (await held(old), await held(young)) == (1, 1)

    await eventually(both_held)
    await world.pool.execute(
        "UPDATE held_team_alerts SET occurred_at = now() - interval '7 days 1 minute' WHERE merchant_id = $1", old
    )

    async def old_pruned() -> bool:
        return await held(old) == 0

    await eventually(old_pruned)
    assert await held(young) == 1


async def _sent(world: World, merchant_id: str, count: int) -> bool:
    sent = await world.pool.fetchval(
        "SELECT count(*) FROM messages WHERE merchant_id = $1 AND status = 'sent'", merchant_id
    )
    return bool(sent == count)


def endpoint_state(
    merchant_id: str, endpoint_id: str, url: str, enabled: bool, version: int, sealed_secret: str | None = None
) -> WebhookEndpointConfigured:
    return WebhookEndpointConfigured(
        merchant_id=merchant_id,
        endpoint_id=endpoint_id,
        url=url,
        event_types=["refund.requested"],
        enabled=enabled,
        encrypted_secret=sealed_secret or SecretBox(TEST_SECRET_KEY).seal(new_signing_secret(), context=endpoint_id),
        version=version,
    )


async def enabled_again_with_a_marker(
    world: World, merchant_id: str, endpoint_id: str, hook: str
) -> tuple[list[str], str]:
    """Enable the endpoint again and send an event behind what came before: the webhook ids its receiver got once
    that event arrived, and the event's id."""
    await reconfigure(world, merchant_id, endpoint_id, world.http.url(hook), enabled=True, version=3)
    marker = await world.feed.publish(requested(merchant_id))

    async def marker_arrived() -> bool:
        return any(r.headers["webhook-id"] == str(marker.id) for r in world.http.received[hook])

    await eventually(marker_arrived)
    return [r.headers["webhook-id"] for r in world.http.received[hook]], str(marker.id)


async def reconfigure(
    world: World, merchant_id: str, endpoint_id: str, url: str, *, enabled: bool, version: int
) -> None:
    # As intake sends a change: with the sealed secret it stored (a new one only when rolled or sealed again).
    sealed = await world.pool.fetchval("SELECT encrypted_secret FROM webhook_endpoints WHERE id = $1", endpoint_id)
    await world.feed.publish(endpoint_state(merchant_id, endpoint_id, url, enabled, version, sealed))

    async def applied() -> bool:
        return bool(
            await world.pool.fetchval("SELECT version = $2 FROM webhook_endpoints WHERE id = $1", endpoint_id, version)
        )

    await eventually(applied)
