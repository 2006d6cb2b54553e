"""Customer emails and team alerts through a real SMTP server and a real HTTP receiver, each sent once."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from refundflow_notifier import event_handlers, message_queue
from refundflow_notifier.records import Channel
from refundflow_shared.events import (
    Event,
    NotificationSettingsConfigured,
    PortalLink,
    ProviderUnavailable,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReversed,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
    TeamAlertRaised,
)
from refundflow_shared.secret_box import SecretBox
from tests.conftest import create_database
from tests.support.notifier_harness import (
    TEST_SECRET_KEY,
    EventFeed,
    configure_team,
    notifier_database,
    notifier_settings,
    one_waiting_for_the_other,
    running_notifier,
)
from tests.support.notifier_receivers import (
    DEFERRING_DOMAIN,
    REJECTING_DOMAIN,
    CapturingSmtpHandler,
    HttpReceiver,
    http_receiver,
    smtp_server,
)
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


class World:
    def __init__(self, feed: EventFeed, pool: asyncpg.Pool, mail: CapturingSmtpHandler, http: HttpReceiver) -> None:
        self.feed, self.pool, self.mail, self.http = feed, pool, mail, http


@asynccontextmanager
async def notifier_world(postgres_url: str, kafka_bootstrap: str, **overrides: Any) -> AsyncIterator[World]:
    with smtp_server() as (mail, smtp_port):
        async with http_receiver() as http:
            database = await create_database(postgres_url)
            settings = notifier_settings(database, kafka_bootstrap, smtp_port, **overrides)
            async with running_notifier(settings) as (feed, pool):
                yield World(feed, pool, mail, http)


@pytest.fixture(scope="module")
async def world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    """An email that follows another waits 3 s for it (the harness's): many tests here send one alone."""
    async with notifier_world(postgres_url, kafka_bootstrap) as world:
        yield world


@pytest.fixture(scope="module")
async def patient_world(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[World]:
    """An email that follows another waits 20 s for it: the tests of that order publish the earlier event a second
    or more after the later one's email was queued, and a loaded machine can stretch that past 3 s; none of them
    waits for the hold to run out."""
    async with notifier_world(postgres_url, kafka_bootstrap, email_order_wait_seconds=20.0) as world:
        yield world


def ids() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"merchant_id": f"mer_{suffix}", "payment_id": f"pay_{suffix}", "refund_id": f"ref_{suffix}"}


def customer() -> str:
    return f"ada.{uuid.uuid4().hex[:8]}@example.com"


async def mails_to(world: World, recipient: str, count: int = 1) -> list[EmailMessage]:
    async def arrived() -> bool:
        return len(world.mail.to(recipient)) >= count

    await eventually(arrived, timeout=60)
    return world.mail.to(recipient)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1500, "JPY", "¥1,500"), (123456, "EUR", "€1,234.56"), (12345, "KWD", "KWD 12.345")],
)
async def test_a_succeeded_refund_confirms_the_amount_in_the_currencys_format(
    world: World, amount: int, currency: str, shown: str
) -> None:
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": amount, "currency": currency}
    await world.feed.publish(
        RefundApproved(
            **priced,
            provider_payment_id="pi_1",
            payment_amount=amount,
            approved_by="u",
            process_time="5–10 business days",
        )
    )
    await mails_to(world, to)  # the approval: it carries the policy's process time, which the notifier keeps
    await world.feed.publish(RefundSucceeded(**priced, provider_refund_id="re_1"))

    _, message = await mails_to(world, to, 2)
    assert message["Subject"] == f"Your refund of {shown} is on its way"
    assert shown in text_of(message) and shown in html_of(message)
    assert "original payment method" in text_of(message)
    assert "5–10 business days" in text_of(message)
    assert message["Message-ID"].endswith("@refundflow.test>"), "MAIL_FROM's domain: a fully qualified one"
    assert message["Date"]
    assert message["Auto-Submitted"] == "auto-generated"


async def test_a_request_is_acknowledged_with_what_happens_next_from_the_merchant(world: World) -> None:
    to, refund = customer(), ids()
    await configure_team(world.feed, world.pool, refund["merchant_id"])
    await world.feed.publish(
        RefundRequested(
            **refund, customer_email=to, amount=4999, currency="EUR", reason="requested_by_customer", channel="portal"
        )
    )

    [message] = await mails_to(world, to)
    assert message["Subject"] == "We received your refund request for €49.99"
    assert "within 2 business days" in text_of(message)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Acme Software via Refundflow", "refunds@refundflow.test")
    assert message["Reply-To"] == "support@acme.example"


async def test_a_rejection_carries_the_merchants_note(world: World) -> None:
    to = customer()
    await world.feed.publish(
        RefundRejected(**ids(), customer_email=to, note="The licence was used for 200 days & <more>.")
    )

    [message] = await mails_to(world, to)
    assert message["Subject"] == "About your refund request"
    assert "The licence was used for 200 days & <more>." in text_of(message)
    assert "200 days &amp; &lt;more&gt;." in html_of(message), "the note is escaped in HTML"


async def test_a_failure_tells_the_customer_the_merchant_follows_up_without_provider_internals(world: World) -> None:
    to = customer()
    await world.feed.publish(
        RefundFailed(
            **ids(),
            customer_email=to,
            amount=1000,
            currency="USD",
            failure_reason="insufficient_funds",
            failure_message="Stripe: balance_insufficient",
        )
    )

    [message] = await mails_to(world, to)
    assert message["Subject"] == "A problem with your refund of $10.00"
    assert "will follow up" in text_of(message)
    assert "insufficient" not in message.as_string() and "Stripe" not in message.as_string()


async def test_a_failure_on_a_disputed_payment_tells_the_customer_their_banks_dispute_decides(world: World) -> None:
    disputed, card = customer(), customer()
    common = {"amount": 1000, "currency": "USD"}
    await world.feed.publish(
        RefundFailed(**ids(), **common, customer_email=disputed, failure_reason="payment_disputed")
    )
    await world.feed.publish(
        RefundFailed(**ids(), **common, customer_email=card, failure_reason="charge_for_pending_refund_disputed")
    )

    for to in (disputed, card):
        [message] = await mails_to(world, to)
        text = text_of(message)
        assert "this payment is disputed with your bank" in text, text
        assert "your bank" in text and "the dispute" in text
        assert "will follow up" not in text, "the merchant cannot refund a disputed payment: nobody will follow up"


async def test_a_failure_for_the_customers_card_says_so(world: World) -> None:
    to = customer()
    await world.feed.publish(
        RefundFailed(**ids(), customer_email=to, amount=1000, currency="USD", failure_reason="lost_or_stolen_card")
    )

    [message] = await mails_to(world, to)
    text = text_of(message)
    assert "the card it was sent to was reported lost or stolen" in text, text
    assert "will follow up" in text


async def test_a_reversed_refund_tells_the_customer_why_and_what_happens_next(world: World) -> None:
    to, refund = customer(), ids()
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    await configure_team(world.feed, world.pool, refund["merchant_id"], team_email=team)
    common = {**refund, "customer_email": to, "amount": 2500, "currency": "GBP", "provider_refund_id": "re_2"}
    await world.feed.publish(RefundSucceeded(**common))
    await mails_to(world, to, 1)
    await world.feed.publish(
        RefundReversed(**common, failure_reason="expired_or_canceled_card", failure_message="card_expired at bank")
    )

    first, follow_up = await mails_to(world, to, 2)
    assert first["Subject"] == "Your refund of £25.00 is on its way"
    assert follow_up["Subject"] == "Your refund of £25.00 could not be completed"
    text = text_of(follow_up)
    assert "the card it was sent to has expired or been cancelled" in text
    assert "What happens next" in text and "will contact you" in text
    assert "card_expired at bank" not in follow_up.as_string(), "the provider's own words stay with the team"
    [alert] = await mails_to(world, team)
    assert alert["Subject"] == "[Refundflow] Refund reversed: £25.00"
    assert "the customer was not refunded" in text_of(alert) and "card_expired at bank" in text_of(alert)


async def test_a_duplicate_event_sends_no_second_email_or_alert(world: World) -> None:
    to, refund = customer(), ids()
    await configure_team(world.feed, world.pool, refund["merchant_id"], slack=world.http.url(refund["merchant_id"]))
    event = await world.feed.publish(
        RefundRequested(
            **refund, customer_email=to, amount=100, currency="EUR", reason="duplicate_test", channel="portal"
        )
    )
    await world.feed.redeliver(event)
    marker = customer()
    await world.feed.publish(
        RefundSucceeded(**ids(), customer_email=marker, amount=1, currency="EUR", provider_refund_id="re_m")
    )

    await mails_to(world, to)
    await mails_to(world, marker)
    await asyncio.sleep(1)  # time for a duplicate to show
    assert len(world.mail.to(to)) == 1
    assert len(world.http.received[refund["merchant_id"]]) == 1, "one Slack alert"


async def test_team_alerts_reach_slack_and_the_team_email(world: World) -> None:
    refund = ids()
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    slack = refund["merchant_id"]
    await configure_team(world.feed, world.pool, refund["merchant_id"], slack=world.http.url(slack), team_email=team)
    common = {**refund, "customer_email": customer(), "amount": 4999, "currency": "EUR"}
    await world.feed.publish(RefundRequested(**common, reason="requested_by_customer"))
    await world.feed.publish(
        RefundApproved(**common, provider_payment_id="pi_1", payment_amount=4999, approved_by="api_key:key_1")
    )
    await world.feed.publish(RefundFailed(**common, failure_reason="provider_unavailable"))

    # Each event type has its own topic: the alerts may arrive in any order.
    alerts = {m["Subject"]: m for m in await mails_to(world, team, 3)}
    assert sorted(alerts) == [
        "[Refundflow] New refund request to review: €49.99",
        "[Refundflow] Refund approved: €49.99",
        "[Refundflow] Refund failed: €49.99",
    ]
    assert "provider_unavailable" in text_of(alerts["[Refundflow] Refund failed: €49.99"]), "the team sees why"
    await eventually(lambda: _count(world.http, slack, 3))
    texts = {json.loads(r.body)["text"].split("\n")[0]: json.loads(r.body)["text"] for r in world.http.received[slack]}
    assert sorted(texts) == ["New refund request to review: €49.99", "Refund approved: €49.99", "Refund failed: €49.99"]
    assert "approved by: api_key:key_1" in texts["Refund approved: €49.99"]


async def test_a_failed_refunds_alert_gives_the_team_the_providers_message_and_what_to_do(world: World) -> None:
    refund = ids()
    team, slack = f"team.{uuid.uuid4().hex[:8]}@acme.example", uuid.uuid4().hex
    await configure_team(world.feed, world.pool, refund["merchant_id"], slack=world.http.url(slack), team_email=team)
    await world.feed.publish(
        RefundFailed(
            **refund,
            customer_email=customer(),
            amount=1200,
            currency="EUR",
            failure_reason="provider_refused",
            failure_message="provider: Charge ch_9 has already been refunded.",
        )
    )

    [alert] = await mails_to(world, team)
    assert alert["Subject"] == "[Refundflow] Refund failed: €12.00"
    next_step = "next step: the customer was told you will follow up: contact them, and refund them again once"
    for said in (text_of(alert), html.unescape(html_of(alert))):
        assert "reason: provider_refused" in said
        assert "provider's message: provider: Charge ch_9 has already been refunded." in said, said
        assert next_step in said, said
    await eventually(lambda: _count(world.http, slack, 1))
    text = json.loads(world.http.received[slack][0].body)["text"]
    assert "• provider's message: provider: Charge ch_9 has already been refunded." in text
    assert f"• {next_step}" in text


async def test_a_team_alert_comes_from_refundflow_with_no_reply_to_the_merchants_support_desk(world: World) -> None:
    """The merchant's sender name and Reply-To are for its customers: a team member's reply must not reach them."""
    to, refund = customer(), ids()
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    await configure_team(
        world.feed, world.pool, refund["merchant_id"], team_email=team, sender_name="Acme Support",
        reply_to="help@acme.example",
    )  # fmt: skip
    await world.feed.publish(
        RefundRequested(
            **refund, customer_email=to, amount=500, currency="EUR", reason="requested_by_customer", channel="portal"
        )
    )

    [alert] = await mails_to(world, team)
    assert alert["From"] == "Refundflow <refunds@refundflow.test>"
    assert alert["Reply-To"] is None
    [acknowledged] = await mails_to(world, to)
    assert acknowledged["From"] == "Acme Support via Refundflow <refunds@refundflow.test>"
    assert acknowledged["Reply-To"] == "help@acme.example"


async def _count(http: HttpReceiver, name: str, expected: int) -> bool:
    return len(http.received[name]) >= expected


@pytest.mark.parametrize("bad_address", ["not-an-address", f"nobody@{REJECTING_DOMAIN}"])
async def test_an_undeliverable_address_is_recorded_and_alerted_and_others_still_go_out(
    world: World, bad_address: str
) -> None:
    refund = ids()
    slack = refund["merchant_id"]
    await configure_team(world.feed, world.pool, refund["merchant_id"], slack=world.http.url(slack))
    await world.feed.publish(
        RefundSucceeded(**refund, customer_email=bad_address, amount=700, currency="EUR", provider_refund_id="re_x")
    )
    good = customer()
    await world.feed.publish(
        RefundSucceeded(**ids(), customer_email=good, amount=700, currency="EUR", provider_refund_id="re_y")
    )

    await mails_to(world, good)
    await eventually(lambda: _count(world.http, slack, 1))
    alert = json.loads(world.http.received[slack][0].body)["text"]
    assert alert.startswith("A customer email could not be delivered")
    assert bad_address in alert
    row = await world.pool.fetchrow(
        "SELECT status, error FROM messages WHERE recipient = $1 AND kind = 'refund_succeeded'", bad_address
    )
    assert row is not None and row["status"] == "rejected" and row["error"]


async def test_the_log_names_a_recipient_by_a_reference_only_this_deployment_can_compute(world: World) -> None:
    """An unkeyed hash of the address (sha256) would tell whoever holds the log and an address whether it was
    emailed: the reference is keyed by the deployment's WEBHOOK_SECRET_KEYS, the same on every line."""
    to = customer().upper()
    refunds = [ids(), ids()]
    with capture_logs() as logs:
        for refund in refunds:
            await world.feed.publish(
                RefundSucceeded(**refund, customer_email=to, amount=100, currency="EUR", provider_refund_id="re_l")
            )
        await mails_to(world, to, count=2)
        await world.feed.publish(
            RefundSucceeded(**ids(), customer_email="not-an-address", amount=1, currency="EUR", provider_refund_id="re")
        )

        async def rejected_logged() -> bool:
            return any(line["event"] == "email_rejected" for line in logs)

        await eventually(rejected_logged, timeout=30)

    merchants = {refund["merchant_id"] for refund in refunds}
    sent = [line["recipient"] for line in logs if line["event"] == "message_sent" and line["merchant_id"] in merchants]
    [rejected] = [line["recipient"] for line in logs if line["event"] == "email_rejected"]
    assert len(sent) == 2 and sent[0] == sent[1], "the lines of one recipient correlate"
    for address, logged in ((to, sent[0]), ("not-an-address", rejected)):
        assert len(logged) == 16 and logged not in hashlib.sha256(address.lower().encode()).hexdigest()
    assert to.lower() not in repr(logs).lower()


async def test_a_deferred_email_is_retried_and_delivered_once(world: World) -> None:
    to = f"ada.{uuid.uuid4().hex[:8]}@{DEFERRING_DOMAIN}"
    await world.feed.publish(
        RefundSucceeded(**ids(), customer_email=to, amount=100, currency="EUR", provider_refund_id="re_d")
    )

    assert len(await mails_to(world, to)) == 1
    assert to in world.mail.deferred, "the first attempt was answered 451"
    # The message is recorded once the server's answer is back, a moment after the mail reached the server.
    await eventually(lambda: _settled(world.pool, to))
    row = await world.pool.fetchrow("SELECT status, attempts FROM messages WHERE recipient = $1", to)
    assert row is not None and (row["status"], row["attempts"]) == ("sent", 2)


async def _settled(pool: asyncpg.Pool, recipient: str) -> bool:
    return bool(await pool.fetchval("SELECT status <> 'pending' FROM messages WHERE recipient = $1", recipient))


async def test_a_raised_team_alert_reaches_slack_and_the_team_email_with_its_details(world: World) -> None:
    merchant_id = ids()["merchant_id"]
    team, slack = f"team.{uuid.uuid4().hex[:8]}@acme.example", uuid.uuid4().hex
    await configure_team(world.feed, world.pool, merchant_id, slack=world.http.url(slack), team_email=team)
    await world.feed.publish(
        TeamAlertRaised(
            merchant_id=merchant_id,
            kind="refund_needs_attention",
            title="Refund ref_7 cannot finish on its own",
            details={"why": "the provider refused the key <twice>", "what to do": "refund it by hand"},
            refund_id="ref_7",
        )
    )

    [alert] = await mails_to(world, team)
    assert alert["Subject"] == "[Refundflow] Refund ref_7 cannot finish on its own"
    assert "what to do: refund it by hand" in text_of(alert) and "refund: ref_7" in text_of(alert)
    assert "&lt;twice&gt;" in html_of(alert)
    await eventually(lambda: _count(world.http, slack, 1))
    assert json.loads(world.http.received[slack][0].body)["text"].splitlines() == [
        "Refund ref_7 cannot finish on its own",
        "• refund: ref_7",
        "• why: the provider refused the key &lt;twice&gt;",
        "• what to do: refund it by hand",
    ]


async def test_a_cancel_the_provider_refused_is_told_to_the_customer_once_and_to_the_team_once(world: World) -> None:
    """A cancel-only decision on a customer's request: its rejection is not mailed, as the cancellation tells it. The
    provider refused the cancel: subscription.cancel_failed went to the merchant's webhooks only, the processor's
    alert to the team, and the customer, who asked, heard nothing at all. They now get one email, the team one
    alert (the processor's: the event itself raises none)."""
    to, refund = customer(), ids()
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    await configure_team(world.feed, world.pool, refund["merchant_id"], team_email=team)
    url = f"https://refunds.acme.test/portal/pt_{uuid.uuid4().hex}"
    sealed = SecretBox(TEST_SECRET_KEY).seal(url, context=refund["payment_id"])
    refused = await world.feed.publish(
        SubscriptionCancelFailed(
            portal_link=PortalLink(sealed_url=sealed, expires_at=datetime.now(UTC) + timedelta(days=7)),
            **refund,
            subscription_id="sub_refused",
            at_period_end=True,
            reason="No such subscription: 'sub_refused'",
            customer_email=to,
            merchant_name="Acme Software",
            note_to_customer="We cannot refund a period already used.",
            no_refund=True,
        )
    )
    await world.feed.publish(  # as the processor raises it with the event, in the same transaction
        TeamAlertRaised(
            merchant_id=refund["merchant_id"],
            kind="subscription_cancel_failed",
            title="A subscription could not be canceled: the customer may still be billed",
            details={"subscription_id": "sub_refused", "error": "No such subscription: 'sub_refused'"},
            payment_id=refund["payment_id"],
            refund_id=refund["refund_id"],
        )
    )
    await world.feed.redeliver(refused)

    [message] = await mails_to(world, to)
    [alert] = await mails_to(world, team)
    await asyncio.sleep(1)  # time for a second one to show
    assert len(world.mail.to(to)) == 1 and len(world.mail.to(team)) == 1
    assert message["Subject"] == "Your subscription is not cancelled yet"
    text = " ".join(text_of(message).split())
    assert "The cancellation of your subscription with Acme Software could not be made yet" in text
    assert "No refund was made for your request." in text
    assert "We cannot refund a period already used." in text
    assert "Acme Software has been told and will arrange it" in text
    assert "No such subscription" not in message.as_string(), "the provider's words stay with the team"
    assert "Acme Software has been told" in html_of(message)
    assert url in text_of(message), "the request's link, carried"
    assert alert["Subject"] == "[Refundflow] A subscription could not be canceled: the customer may still be billed"


async def test_an_alert_handled_before_the_merchants_settings_reaches_the_team_once_when_they_arrive(
    world: World,
) -> None:
    # The settings are keyed by merchant, a refund's events by payment: another partition, so the refund may be
    # handled first, though it happened after the settings were saved.
    merchant_id = ids()["merchant_id"]
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    earlier = await world.feed.publish(raised(merchant_id, "before the settings"))  # no channel then: not sent
    configured = Event.wrap(
        NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team), source="refundflow/test", sequence=1
    )
    first = await world.feed.publish(raised(merchant_id, "first"))
    assert earlier.time < configured.time < first.time
    await eventually(lambda: _handled(world.pool, first), timeout=60)
    await world.feed.redeliver(first)  # the same alert again, before the settings: held once

    await world.feed.redeliver(configured)
    [alert] = await mails_to(world, team)
    assert alert["Subject"] == "[Refundflow] first"
    await world.feed.redeliver(configured)  # sends nothing again
    await world.feed.redeliver(first)  # nor does the alert again, now the settings are here
    await world.feed.publish(raised(merchant_id, "marker"))

    arrived = await mails_to(world, team, 2)
    await asyncio.sleep(1)  # time for a duplicate to show
    assert sorted(str(m["Subject"]) for m in world.mail.to(team)) == ["[Refundflow] first", "[Refundflow] marker"]
    assert len(arrived) == 2


async def test_a_new_announcement_of_the_same_settings_sends_a_released_alert_no_second_time(world: World) -> None:
    """Intake announces the settings again (a key rotation seals the Slack URL again): what was held and sent at the
    first announcement is not sent again."""
    merchant_id = ids()["merchant_id"]
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    configured, again = (
        Event.wrap(
            NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team),
            source="refundflow/test",
            sequence=sequence,
        )
        for sequence in (1, 2)
    )
    first = await world.feed.publish(raised(merchant_id, "first"))  # after both
    await eventually(lambda: _handled(world.pool, first), timeout=60)
    await world.feed.redeliver(configured)
    await world.feed.redeliver(again)
    await world.feed.publish(raised(merchant_id, "marker"))

    await mails_to(world, team, 2)
    await asyncio.sleep(1)  # time for a duplicate to show
    assert sorted(str(m["Subject"]) for m in world.mail.to(team)) == ["[Refundflow] first", "[Refundflow] marker"]


@pytest.mark.parametrize("raising", ["team_alert.raised", "refund.requested"])
@pytest.mark.parametrize("first", ["the alert's batch", "the settings"])
async def test_an_alert_and_its_merchants_settings_handled_at_once_queue_the_alert_once(
    postgres_url: str, first: str, raising: str
) -> None:
    """Handled at the same time on two partitions, each transaction could read before the other committed: the
    alert found no settings, the settings no alert held (or, for a webhook event's, no event stored), and the team
    never heard of it."""
    refund = ids()
    merchant_id = refund["merchant_id"]
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    settings = notifier_settings("postgresql://unused/unused", "127.0.0.1:9", 25)
    configured = Event.wrap(
        NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team), source="refundflow/test", sequence=1
    )
    data = raised(merchant_id, "raced") if raising == "team_alert.raised" else to_review(refund)
    alert = Event.wrap(data, source="refundflow/test", sequence=1)
    data_to = getattr(data, "customer_email", "")  # the customer's email is not under test
    async with notifier_database(postgres_url) as pool, pool.acquire() as one, pool.acquire() as other:

        async def handle_the_alert(conn: asyncpg.Connection) -> None:
            notified = await event_handlers.notify(conn, settings, None, alert, alert.data, {})
            await event_handlers.queue_notifications(conn, settings, [notified])

        async def save_the_settings(conn: asyncpg.Connection) -> None:
            assert isinstance(configured.data, NotificationSettingsConfigured)
            await event_handlers.settings_announced(conn, settings, configured, configured.data)

        hold, race = (
            (handle_the_alert, save_the_settings)
            if first == "the alert's batch"
            else (
                save_the_settings,
                handle_the_alert,
            )
        )
        await one_waiting_for_the_other(one, other, first=hold, then=race)

        queued = await pool.fetch(
            "SELECT recipient, kind FROM messages WHERE merchant_id = $1 AND recipient <> $2", merchant_id, data_to
        )
        assert [(r["recipient"], r["kind"]) for r in queued] == [(team, "team_alert")]
        assert await pool.fetchval("SELECT count(*) FROM held_team_alerts WHERE merchant_id = $1", merchant_id) == 0


async def test_a_refunds_alerts_handled_before_the_merchants_settings_reach_the_team_once_when_they_arrive(
    world: World,
) -> None:
    """A refund's events are kept for the merchant's webhooks (``webhook_events``): their alerts are not held, but
    made again from them when the settings arrive."""
    refund = ids()
    merchant_id = refund["merchant_id"]
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    earlier = await world.feed.publish(to_review(ids() | {"merchant_id": merchant_id}))  # no channel then: not sent
    configured = Event.wrap(
        NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team), source="refundflow/test", sequence=1
    )
    requested = await world.feed.publish(to_review(refund))
    approved = await world.feed.publish(approval(refund))
    assert earlier.time < configured.time < requested.time
    await eventually(lambda: _all_handled(world.pool, earlier, requested, approved), timeout=60)
    assert await _held(world.pool, merchant_id) == 0

    await world.feed.redeliver(configured)
    alerts = await mails_to(world, team, 2)
    assert sorted(str(m["Subject"]) for m in alerts) == [
        "[Refundflow] New refund request to review: €49.99",
        "[Refundflow] Refund approved: €49.99",
    ]
    assert "approved by: api_key:key_1" in text_of(next(m for m in alerts if "approved" in str(m["Subject"])))
    await world.feed.redeliver(configured)  # sends nothing again
    await world.feed.redeliver(approved)  # nor does the event again, now the settings are here
    await world.feed.publish(raised(merchant_id, "marker"))

    await mails_to(world, team, 3)
    await asyncio.sleep(1)  # time for a duplicate to show
    assert len(world.mail.to(team)) == 3


async def test_an_alert_only_event_handled_before_the_settings_is_held_until_they_arrive(world: World) -> None:
    """provider.unavailable is no webhook event: nothing else keeps it, so its alert is held for the settings."""
    refund = ids()
    merchant_id = refund["merchant_id"]
    team = f"team.{uuid.uuid4().hex[:8]}@acme.example"
    configured = Event.wrap(
        NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team), source="refundflow/test", sequence=1
    )
    unavailable = await world.feed.publish(
        ProviderUnavailable(
            merchant_id=merchant_id,
            payment_id=refund["payment_id"],
            refund_id=refund["refund_id"],
            provider="stripe",
            attempts=5,
            last_error="timed out",
        )
    )
    await eventually(lambda: _handled(world.pool, unavailable), timeout=60)
    assert await _held(world.pool, merchant_id) == 1

    await world.feed.redeliver(configured)
    [alert] = await mails_to(world, team)
    assert alert["Subject"] == "[Refundflow] Payment provider stripe unavailable after 5 attempts"
    assert await _held(world.pool, merchant_id) == 0


async def test_a_merchant_without_settings_holds_nothing_for_its_refunds_alerts(world: World) -> None:
    """Most merchants never save settings: their refunds' alerts cost no row (their events are kept for webhooks
    anyway, and the alerts are made from those if settings come)."""
    refund = ids()
    requested = await world.feed.publish(to_review(refund))
    approved = await world.feed.publish(approval(refund))
    await eventually(lambda: _all_handled(world.pool, requested, approved), timeout=60)

    assert await _held(world.pool, refund["merchant_id"]) == 0
    stored = await world.pool.fetchval(
        "SELECT count(*) FROM webhook_events WHERE merchant_id = $1", refund["merchant_id"]
    )
    assert stored == 2


async def test_settings_that_replace_settings_naming_a_channel_send_no_alert_again(world: World) -> None:
    """The alerts were sent to the channel of the settings then in force: newer settings, saved before the refund
    happened but heard of after it, make none of them again for their channel."""
    refund = ids()
    merchant_id = refund["merchant_id"]
    first_team, second_team = (f"team.{uuid.uuid4().hex[:8]}@acme.example" for _ in range(2))
    first, second = (
        Event.wrap(
            NotificationSettingsConfigured(merchant_id=merchant_id, team_email=team),
            source="refundflow/test",
            sequence=sequence,
        )
        for sequence, team in ((1, first_team), (2, second_team))
    )
    await world.feed.redeliver(first)
    await eventually(lambda: _handled(world.pool, first), timeout=60)
    await world.feed.publish(to_review(refund))
    await mails_to(world, first_team)

    await world.feed.redeliver(second)
    await eventually(lambda: _handled(world.pool, second), timeout=60)
    await world.feed.publish(raised(merchant_id, "marker"))
    [marker] = await mails_to(world, second_team)
    assert marker["Subject"] == "[Refundflow] marker"
    await asyncio.sleep(1)  # time for a duplicate to show
    assert len(world.mail.to(second_team)) == 1 and len(world.mail.to(first_team)) == 1


def raised(merchant_id: str, title: str) -> TeamAlertRaised:
    return TeamAlertRaised(merchant_id=merchant_id, kind="refund_needs_attention", title=title)


def to_review(refund: dict[str, str]) -> RefundRequested:
    return RefundRequested(
        **refund, customer_email=customer(), amount=4999, currency="EUR", reason="requested_by_customer"
    )


def approval(refund: dict[str, str]) -> RefundApproved:
    return RefundApproved(
        **refund,
        customer_email=customer(),
        amount=4999,
        currency="EUR",
        provider_payment_id="pi_1",
        payment_amount=4999,
        approved_by="api_key:key_1",
    )


async def _held(pool: asyncpg.Pool, merchant_id: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM held_team_alerts WHERE merchant_id = $1", merchant_id)
    return count


async def _handled(pool: asyncpg.Pool, event: Event) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id))


async def _all_handled(pool: asyncpg.Pool, *events: Event) -> bool:
    handled = await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])", [e.id for e in events])
    return bool(handled == len(events))


async def test_a_customers_emails_about_one_refund_arrive_in_the_refunds_order(world: World) -> None:
    to, refund = customer(), ids()

    def email(kind: str) -> message_queue.QueuedMessage:
        body = f"To: {to}\r\nSubject: {kind}\r\n\r\nAbout {refund['refund_id']}.\r\n".encode()
        return message_queue.QueuedMessage(
            uuid.uuid4(), refund["merchant_id"], Channel.EMAIL, kind, to, body, refund["refund_id"]
        )

    # As one consumer batch can queue them (it reads topic by topic): "on its way" first, "received" last.
    async with world.pool.acquire() as conn, conn.transaction():
        await message_queue.queue(
            conn, [email("refund_succeeded"), email("refund_approved"), email("refund_requested")]
        )

    received = await mails_to(world, to, 3)
    assert [m["Subject"] for m in received] == ["refund_requested", "refund_approved", "refund_succeeded"]


async def test_queueing_batches_of_any_size_keeps_one_plan(world: World) -> None:
    """Batches of one to four messages, queued on one connection: after the five plans PostgreSQL makes for the
    first calls, it keeps one generic plan (given the arrays themselves, it counted their elements and planned each
    call anew, about 0.4 ms of its CPU a call)."""
    to = customer()

    def rejected(kind: str) -> message_queue.QueuedMessage:  # recorded as rejected: nothing to send
        refund = ids()
        return message_queue.QueuedMessage(
            uuid.uuid4(), refund["merchant_id"], Channel.EMAIL, kind, to, None, refund["refund_id"], status="rejected"
        )

    async with world.pool.acquire() as conn:
        for size in [1, 2, 3, 4] * 4:
            async with conn.transaction():
                await message_queue.queue(conn, [rejected("refund_succeeded") for _ in range(size)])
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            message_queue._QUEUE,
        )
    assert plans is not None
    assert plans["custom_plans"] <= 5 and plans["generic_plans"] >= 11, dict(plans)


async def on_its_way_before_its_approval(world: World, priced: dict[str, Any]) -> None:
    """The processor's event is handled first ("on its way" queued), the approval's after: it sat on another
    topic, in a batch still to come."""
    await world.feed.publish(RefundSucceeded(**priced, provider_refund_id="re_1"))

    async def queued() -> bool:
        return bool(
            await world.pool.fetchval(
                "SELECT count(*) FROM messages WHERE refund_id = $1 AND kind = 'refund_succeeded'", priced["refund_id"]
            )
        )

    await eventually(queued, timeout=30)
    await world.feed.publish(RefundApproved(**priced, provider_payment_id="pi_1", payment_amount=4999, approved_by="u"))


async def test_on_its_way_waits_for_the_approval_email_even_after_the_request_was_acknowledged(
    patient_world: World,
) -> None:
    """The email "on its way" always follows "approved": one sent before them both ("we received your request")
    does not stand in for the approval it waits for."""
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    await patient_world.feed.publish(RefundRequested(**priced, reason="requested_by_customer", channel="portal"))
    await mails_to(patient_world, to, 1)
    await on_its_way_before_its_approval(patient_world, priced)

    received = await mails_to(patient_world, to, 3)
    assert [m["Subject"] for m in received] == [
        "We received your refund request for €49.99",
        "Your refund of €49.99 is approved",
        "Your refund of €49.99 is on its way",
    ]


async def test_on_its_way_that_came_in_before_its_approval_waits_for_the_approval_email(patient_world: World) -> None:
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    await on_its_way_before_its_approval(patient_world, priced)

    received = await mails_to(patient_world, to, 2)
    assert [m["Subject"] for m in received] == [
        "Your refund of €49.99 is approved",
        "Your refund of €49.99 is on its way",
    ]


@pytest.mark.parametrize("decision", ["approved", "rejected"])
async def test_a_decision_handled_before_its_request_waits_for_the_received_email(
    patient_world: World, decision: str
) -> None:
    """The customer asked, so "we received your request" comes first, even when the decision's event was handled
    in an earlier batch (it is on another topic)."""
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    if decision == "approved":
        await patient_world.feed.publish(
            RefundApproved(**priced, provider_payment_id="pi_1", payment_amount=4999, approved_by="u", channel="portal")
        )
    else:
        await patient_world.feed.publish(RefundRejected(**refund, customer_email=to, note="Used up.", channel="portal"))

    async def queued() -> bool:
        return bool(
            await patient_world.pool.fetchval("SELECT 1 FROM messages WHERE refund_id = $1", refund["refund_id"])
        )

    await eventually(queued, timeout=30)
    await asyncio.sleep(1)  # the worker had its chance to send the decision alone
    await patient_world.feed.publish(RefundRequested(**priced, reason="requested_by_customer", channel="portal"))

    received = await mails_to(patient_world, to, 2)
    assert [m["Subject"] for m in received] == [
        "We received your refund request for €49.99",
        "Your refund of €49.99 is approved" if decision == "approved" else "About your refund request",
    ]


async def queued_alone(world: World, refund_id: str) -> None:
    """Its email is queued, and the worker had its chance to send it alone."""

    async def queued() -> bool:
        return bool(await world.pool.fetchval("SELECT 1 FROM messages WHERE refund_id = $1", refund_id))

    await eventually(queued, timeout=30)
    await asyncio.sleep(1)


PERIOD_END = datetime(2031, 5, 14, tzinfo=UTC)


@pytest.mark.parametrize("outcome", ["canceled", "extended", "cancel_failed"])
async def test_a_subscription_outcome_of_an_approved_refund_waits_for_the_approval_email(
    patient_world: World, outcome: str
) -> None:
    """The processor's subscription events are on other topics than refund.approved: after a backlog, a batch can
    read them first. The customer hears of the approval first all the same."""
    to, refund = customer(), ids()
    about = {**refund, "subscription_id": "sub_1", "customer_email": to}
    if outcome == "canceled":
        first: Any = SubscriptionCanceled(**about, at_period_end=False, ends_at=PERIOD_END)
        subject = "Your subscription is cancelled"
    elif outcome == "extended":
        first = SubscriptionExtended(**about, days=7, current_period_end=PERIOD_END)
        subject = "Your subscription is extended by 7 days"
    else:
        first = SubscriptionCancelFailed(**about, at_period_end=False, reason="Refused")
        subject = "Your subscription is not cancelled yet"
    await patient_world.feed.publish(first)
    await queued_alone(patient_world, refund["refund_id"])
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    await patient_world.feed.publish(
        RefundApproved(**priced, provider_payment_id="pi_1", payment_amount=4999, approved_by="u", channel="api")
    )

    received = await mails_to(patient_world, to, 2)
    assert [m["Subject"] for m in received] == ["Your refund of €49.99 is approved", subject]


async def test_a_cancel_only_decisions_cancellation_waits_for_its_goodwill_days_email(patient_world: World) -> None:
    """Cancel only, with goodwill days: the cancellation tells the access end the extension made, so the extension's
    email comes first, even when the cancellation's event was read first."""
    to, refund = customer(), ids()
    about = {**refund, "subscription_id": "sub_1", "customer_email": to}
    await patient_world.feed.publish(
        SubscriptionCanceled(**about, at_period_end=True, ends_at=PERIOD_END, no_refund=True, after_extension=True)
    )
    await queued_alone(patient_world, refund["refund_id"])
    await patient_world.feed.publish(
        SubscriptionExtended(**about, days=7, current_period_end=PERIOD_END, last_period=True)
    )

    received = await mails_to(patient_world, to, 2)
    assert [m["Subject"] for m in received] == [
        "Your subscription is extended by 7 days",
        "Your subscription is cancelled",
    ]


async def test_a_cancel_only_decisions_emails_wait_for_no_approval(world: World) -> None:
    """Cancel only, no money moved: no approval email will come, so neither the goodwill days nor a cancellation
    without them waits for one."""
    to, refund = customer(), ids()
    about = {**refund, "subscription_id": "sub_1", "customer_email": to}
    await world.feed.publish(SubscriptionExtended(**about, days=7, current_period_end=PERIOD_END, last_period=True))
    other = ids()
    await world.feed.publish(
        SubscriptionCanceled(
            **other, subscription_id="sub_2", customer_email=to, at_period_end=True, ends_at=PERIOD_END, no_refund=True
        )
    )

    await mails_to(world, to, 2)
    due_when_queued = "SELECT bool_and(next_attempt_at = created_at) FROM messages WHERE refund_id = ANY($1)"
    assert await world.pool.fetchval(due_when_queued, [refund["refund_id"], other["refund_id"]])


async def test_a_decision_on_a_request_nobody_was_told_of_goes_at_once(world: World) -> None:
    """Approved by the merchant's rules as it was made: there is no "received" email to wait for."""
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    approved = RefundApproved(
        **priced, provider_payment_id="pi_1", payment_amount=4999, approved_by="u", channel="portal", auto_approved=True
    )
    await world.feed.publish(approved)

    [message] = await mails_to(world, to, 1)
    assert message["Subject"] == "Your refund of €49.99 is approved"
    due_when_queued = "SELECT next_attempt_at = created_at FROM messages WHERE refund_id = $1"
    assert await world.pool.fetchval(due_when_queued, refund["refund_id"]), "it was not held back to wait"


async def test_an_email_that_waited_for_an_earlier_one_is_dated_when_it_is_sent(patient_world: World) -> None:
    """Dated as it goes out, not as it was queued: a client sorting by date shows "approved" before "on its way",
    which was queued first and waited for it."""
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 4999, "currency": "EUR"}
    await patient_world.feed.publish(RefundSucceeded(**priced, provider_refund_id="re_1"))

    async def queued() -> bool:
        return bool(
            await patient_world.pool.fetchval("SELECT 1 FROM messages WHERE refund_id = $1", refund["refund_id"])
        )

    await eventually(queued, timeout=30)
    await asyncio.sleep(1.5)  # past a second, within the wait for the approval (20 s)
    await patient_world.feed.publish(
        RefundApproved(**priced, provider_payment_id="pi_1", payment_amount=4999, approved_by="u")
    )

    received = await mails_to(patient_world, to, 2)
    assert [m["Subject"] for m in received] == [
        "Your refund of €49.99 is approved",
        "Your refund of €49.99 is on its way",
    ]
    approved, on_its_way = (m["Date"].datetime for m in received)
    assert approved <= on_its_way
    assert all(len(m.get_all("Date") or []) == 1 for m in received)


async def handled(world: World, event_id: uuid.UUID) -> None:
    async def in_the_inbox() -> bool:
        return bool(await world.pool.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event_id))

    await eventually(in_the_inbox, timeout=30)


async def test_the_merchants_own_refund_rejected_tells_the_customer_nothing(world: World) -> None:
    """The merchant made it (the API) and dropped it: the customer asked for nothing, so hears of no decision."""
    to, refund = customer(), ids()
    event = await world.feed.publish(RefundRejected(**refund, customer_email=to, note="Entered twice.", channel="api"))

    await handled(world, event.id)
    await asyncio.sleep(1)  # time for an email to show
    assert world.mail.to(to) == []
    assert await world.pool.fetchval("SELECT count(*) FROM messages WHERE refund_id = $1", refund["refund_id"]) == 0


async def test_the_merchants_own_refund_approved_for_less_says_nothing_of_what_was_asked(world: World) -> None:
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 2500, "currency": "EUR"}
    approved = {"provider_payment_id": "pi_1", "payment_amount": 4999, "approved_by": "u", "requested_amount": 4000}
    await world.feed.publish(RefundApproved(**priced, **approved, channel="api"))

    [message] = await mails_to(world, to)
    assert message["Subject"] == "Your refund of €25.00 is approved"
    for said in (text_of(message), html_of(message)):
        assert "You asked for" not in said and "the difference" not in said and "€40.00" not in said


async def test_a_customers_request_approved_for_less_says_what_they_asked_for(world: World) -> None:
    to, refund = customer(), ids()
    priced = {**refund, "customer_email": to, "amount": 2500, "currency": "EUR"}
    approved = {"provider_payment_id": "pi_1", "payment_amount": 4999, "approved_by": "u", "requested_amount": 4000}
    await world.feed.publish(RefundApproved(**priced, **approved))  # an event from before the channel was said

    [message] = await mails_to(world, to)
    assert "You asked for €40.00: " in text_of(message) and "You asked for €40.00: " in html_of(message)


async def test_without_a_reply_to_no_email_tells_the_customer_to_reply(world: World) -> None:
    """A reply would reach the platform's mailbox (MAIL_FROM), not the merchant: the email says to contact them."""
    to, refund = customer(), ids()
    await configure_team(world.feed, world.pool, refund["merchant_id"], reply_to=None)
    await world.feed.publish(RefundRejected(**refund, customer_email=to, note="Used for 200 days."))

    [message] = await mails_to(world, to)
    assert message["Reply-To"] is None
    for said in (text_of(message), html_of(message)):
        assert "reply to this email" not in said.lower()
        assert "If you have questions, contact Acme Software directly." in said


async def test_with_a_reply_to_the_email_asks_for_a_reply(world: World) -> None:
    to, refund = customer(), ids()
    await configure_team(world.feed, world.pool, refund["merchant_id"], reply_to="help@acme.example")
    await world.feed.publish(RefundRejected(**refund, customer_email=to, note="Used for 200 days."))

    [message] = await mails_to(world, to)
    assert message["Reply-To"] == "help@acme.example"
    assert "If you have questions, reply to this email." in text_of(message)


async def test_once_the_portal_is_switched_off_an_outcome_carrying_the_decisions_link_is_emailed_without_it(
    world: World,
) -> None:
    """The customer asked through the portal and the request was approved with their link; the merchant then
    switched its portal off, and the processor's "on its way" still carries the decision's link: it is left out."""
    to, refund = customer(), ids()
    url = f"https://refunds.acme.test/portal/pt_{uuid.uuid4().hex}"
    sealed = SecretBox(TEST_SECRET_KEY).seal(url, context=refund["payment_id"])
    link = PortalLink(sealed_url=sealed, expires_at=datetime.now(UTC) + timedelta(days=7))
    told = {**refund, "customer_email": to, "merchant_name": "Acme", "portal_link": link}
    priced = {**told, "amount": 2500, "currency": "EUR"}
    await world.feed.publish(RefundRequested(**priced, reason="duplicate", channel="portal"))
    approved = {"provider_payment_id": "pi_1", "payment_amount": 4999, "approved_by": "u", "process_time": "5 days"}
    await world.feed.publish(RefundApproved(**priced, **approved, channel="portal"))
    before = await mails_to(world, to, count=2)
    assert all(url in text_of(message) for message in before), "the portal is on: each email carries the link"

    await world.feed.publish(NotificationSettingsConfigured(merchant_id=refund["merchant_id"], portal_enabled=False))

    async def switched_off() -> bool:
        query = "SELECT portal_enabled FROM merchant_settings WHERE merchant_id = $1"
        return await world.pool.fetchval(query, refund["merchant_id"]) is False

    await eventually(switched_off, timeout=60)
    await world.feed.publish(RefundSucceeded(**priced, provider_refund_id="re_1", process_time="5 days"))

    [on_its_way] = [m for m in await mails_to(world, to, count=3) if "on its way" in str(m["Subject"])]
    for said in (text_of(on_its_way), html_of(on_its_way)):
        assert "/portal/" not in said


async def test_a_cancel_at_the_period_end_without_its_date_never_says_as_of_today(world: World) -> None:
    """The provider said no end date: the customer keeps access to the period's end all the same, so the email must
    not tell them it ended today."""
    to, refund = customer(), ids()
    await world.feed.publish(
        SubscriptionCanceled(**refund, subscription_id="sub_1", customer_email=to, at_period_end=True, no_refund=True)
    )

    [message] = await mails_to(world, to)
    for said in (text_of(message), html_of(message)):
        assert "as of today" not in said
        assert "You keep access until the end of your current billing period" in said


async def test_the_plain_text_says_what_the_html_says_in_the_same_paragraphs(world: World) -> None:
    """The sentence after "Hello," starts with a capital, each paragraph and the link block stand apart, and a
    cancellation whose access end includes free goodwill days does not call it the period the customer paid for."""
    to = customer()
    priced = {"customer_email": to, "amount": 4999, "currency": "EUR"}
    events: list[Any] = [
        RefundFailed(**ids(), **priced, failure_reason="provider_error"),
        RefundFailed(**ids(), **priced, failure_reason="payment_disputed"),
        RefundReversed(**ids(), **priced, provider_refund_id="re_1", failure_reason="declined"),
        SubscriptionExtended(
            **ids(), subscription_id="sub_1", customer_email=to, days=7, current_period_end=PERIOD_END
        ),
        SubscriptionCanceled(
            **ids(), subscription_id="sub_1", customer_email=to, at_period_end=True, ends_at=PERIOD_END,
            no_refund=True, after_extension=True,
        ),
    ]  # fmt: skip
    for event in events:
        await world.feed.publish(event)

    received = await mails_to(world, to, len(events))
    texts = [text_of(m) for m in received]
    for said in texts:
        first = said.split("Hello,\n\n", 1)[1]
        assert first[0].isupper(), first[:40]
        assert "\n\nReference: " in said, said  # the link block stands apart
    told = "\n".join(texts)
    assert "at no cost to you.\n\nYour next payment is now due on 14 May 2031." in told
    [cancelled] = [m for m in received if m["Subject"] == "Your subscription is cancelled"]
    for said in (text_of(cancelled), html_of(cancelled)):
        assert "the period you paid for" not in said
        assert "the end of your current period" in said


@pytest.mark.parametrize("outcome", ["canceled", "cancel_failed"])
async def test_a_cancel_only_on_the_merchants_own_refund_says_nothing_of_a_refund_request(
    world: World, outcome: str
) -> None:
    """The merchant made the refund (the API) and closed it as cancel only: the customer asked for no refund, so is
    not told that none was made for their request."""
    to, refund = customer(), ids()
    about = {**refund, "subscription_id": "sub_1", "customer_email": to, "at_period_end": True, "no_refund": True}
    if outcome == "canceled":
        await world.feed.publish(SubscriptionCanceled(**about, ends_at=PERIOD_END, channel="api"))
    else:
        await world.feed.publish(SubscriptionCancelFailed(**about, reason="Refused", channel="api"))

    [message] = await mails_to(world, to)
    for said in (text_of(message), html_of(message)):
        assert "No refund was made" not in said
