"""What the notifier keeps of a payment's customer, and the merchant's settings read in the same round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from refundflow_notifier import customer_contacts, merchant_settings
from refundflow_notifier.customer_contacts import Contact
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.events import NotificationSettingsConfigured, RefundRequested
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
