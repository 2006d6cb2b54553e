"""What the notifier keeps of a payment's customer, and the merchant's settings read in the same round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from refundflow_notifier import customer_contacts, merchant_settings
from refundflow_notifier.customer_contacts import Contact
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.events import (
    Event,
    EventData,
    NotificationSettingsConfigured,
    PortalLink,
    RefundRequested,
    RefundSucceeded,
)
from tests.support.notifier_harness import notifier_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with notifier_database(postgres_url) as pool:
        yield pool


def requested(merchant_id: str, customer_email: str) -> RefundRequested:
    return RefundRequested(
        refund_id=f"ref_{merchant_id}",
        payment_id="pay_1",
        merchant_id=merchant_id,
        customer_email=customer_email,
        merchant_name=f"{merchant_id} Ltd",
        amount=500,
        currency="EUR",
        reason="requested_by_customer",
        channel="portal",
    )


async def test_the_contact_comes_with_the_merchants_settings_and_another_merchant_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    defaults = NotifierSettings()
    async with pool.acquire() as conn:
        await merchant_settings.save(
            conn,
            NotificationSettingsConfigured(
                merchant_id="mer_b", team_email="team@b.example", sender_name="B Software", reply_to="help@b.example"
            ),
            at=datetime.now(UTC),
            sequence=1,
        )
        remembered = await customer_contacts.remember(conn, requested("mer_a", "ada@example.com"))
        assert remembered is not None
        contact, row = remembered
        assert (contact.customer_email, contact.merchant_name) == ("ada@example.com", "mer_a Ltd")
        # A merchant that set nothing: the defaults.
        assert merchant_settings.preferences_from(defaults, row) == merchant_settings.preferences_from(defaults, None)

        # Another merchant naming the same payment: nothing of it is kept or told, but its own settings are read.
        remembered = await customer_contacts.remember(conn, requested("mer_b", "mallory@example.com"))
        assert remembered is not None
        contact, row = remembered
        assert contact == Contact()
        prefs = merchant_settings.preferences_from(defaults, row)
        expected = ("B Software", "help@b.example", "team@b.example")
        assert (prefs.sender_name, prefs.reply_to, prefs.team_email) == expected
        assert prefs == await merchant_settings.preferences(conn, defaults, "mer_b")

        kept = await customer_contacts.recall(conn, "mer_a", "pay_1")
        assert (kept.customer_email, kept.merchant_name) == ("ada@example.com", "mer_a Ltd")


class _RolledBack(Exception):
    pass


async def test_a_batch_remembers_the_first_event_of_each_payment_in_one_statement_as_one_by_one_would(
    pool: asyncpg.Pool,
) -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    older = PortalLink(sealed_url="older", expires_at=now + timedelta(days=1))
    newer = PortalLink(sealed_url="newer", expires_at=now + timedelta(days=7))

    def on(payment_id: str, merchant_id: str, **fields: object) -> RefundRequested:
        return requested(merchant_id, f"{payment_id}@example.com").model_copy(
            update={"payment_id": payment_id, **fields}
        )

    succeeded = RefundSucceeded(
        refund_id="ref_carried",
        payment_id="pay_carried",
        merchant_id="mer_a",
        customer_email="carried@example.com",
        amount=500,
        currency="EUR",
        provider_refund_id="re_1",
        process_time="5 to 10 days",
    )
    batch: list[EventData] = [
        on("pay_kept", "mer_a", portal_link=older),  # kept with a newer link: that stays
        on("pay_new", "mer_a", portal_link=newer),
        on("pay_kept", "mer_a", portal_link=newer),  # the same payment again: left to its handler
        on("pay_other", "mer_b"),  # another merchant's payment: nothing kept, nothing told
        on("pay_off", "mer_a"),  # intake sends no link: the merchant switched its portal off
        succeeded,  # the processor's outcome carries no link: the kept one stays
    ]
    events = [Event.wrap(data, source="test", sequence=n) for n, data in enumerate(batch, start=1)]
    firsts = [events[0], events[1], events[3], events[4], events[5]]
    known = ["pay_kept", "pay_other", "pay_off", "pay_carried"]

    async with pool.acquire() as conn:
        for payment_id in known:
            await customer_contacts.remember(conn, on(payment_id, "mer_a", portal_link=newer))
        one_by_one = []
        try:
            async with conn.transaction():
                for event in firsts:
                    one_by_one.append(await customer_contacts.remember(conn, event.data))
                raise _RolledBack
        except _RolledBack:
            pass
        async with conn.transaction():
            remembered = await customer_contacts.remember_first_of_each_payment(conn, events)

    assert list(remembered) == [event.id for event in firsts]
    assert [(contact, dict(row)) for contact, row in remembered.values()] == [
        (kept[0], dict(kept[1])) for kept in one_by_one if kept is not None
    ]
    contacts = [remembered[event.id][0] for event in firsts]
    assert [contact.sealed_portal_url for contact in contacts] == ["newer", "newer", None, None, "newer"]
    assert contacts[2] == Contact(), "another merchant's payment: nothing told"
    assert contacts[4].process_time == "5 to 10 days"


async def test_settings_older_than_those_held_change_nothing_and_newer_ones_do_after_intakes_numbers_restarted(
    pool: asyncpg.Pool,
) -> None:
    """A dead letter replayed late is older than what was handled since: it changes nothing. Intake numbers a
    merchant's events in commit order, so the next number wins even from a replica whose clock is behind. After
    intake's database is restored its numbers restart from the backup's; its announcements, made well after what
    the notifier holds, are still taken, and a dead letter from before the restore is still older."""
    defaults = NotifierSettings()
    now = datetime.now(UTC)

    def configured(team_email: str) -> NotificationSettingsConfigured:
        return NotificationSettingsConfigured(merchant_id="mer_order", team_email=team_email)

    async def held() -> str | None:
        async with pool.acquire() as conn:
            return (await merchant_settings.preferences(conn, defaults, "mer_order")).team_email

    async with pool.acquire() as conn:
        await merchant_settings.save(conn, configured("new@example.com"), at=now, sequence=50)
        await merchant_settings.save(conn, configured("replayed@example.com"), at=now - timedelta(hours=1), sequence=40)
    assert await held() == "new@example.com", "a replayed older announcement changed the settings"

    async with pool.acquire() as conn:
        await merchant_settings.save(conn, configured("skewed@example.com"), at=now - timedelta(seconds=2), sequence=51)
    assert await held() == "skewed@example.com", "the next announcement, from a replica whose clock is behind, was lost"

    async with pool.acquire() as conn:
        await merchant_settings.save(conn, configured("restored@example.com"), at=now + timedelta(hours=1), sequence=3)
    assert await held() == "restored@example.com", "intake's announcement after its restore was ignored"

    async with pool.acquire() as conn:  # a dead letter from before the restore, its number above the restored ones
        await merchant_settings.save(conn, configured("stale@example.com"), at=now - timedelta(hours=1), sequence=45)
    assert await held() == "restored@example.com", "a dead letter from before the restore changed the settings"

    async with pool.acquire() as conn:  # a failover that lost the last commit numbers the next save the same
        await merchant_settings.save(
            conn, configured("again@example.com"), at=now + timedelta(hours=1, minutes=2), sequence=3
        )
    assert await held() == "again@example.com", "a save numbered as the one held, made after it, was ignored"
