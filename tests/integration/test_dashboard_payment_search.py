"""The dashboard's payment search: a customer email's start in any case, its characters taken as typed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest

from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
_LISTED = re.compile(r'href="/dashboard/payments/([^"]+)"')


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_search_finds_customer_emails_by_their_start_in_any_case_and_wildcards_are_plain_characters(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    emails = ["Ada.Lovelace@Example.com", "ada_b@example.com", "adaxb@example.com", "100%off@example.com",
              "100xoff@example.com", "grace@ada.example"]  # fmt: skip
    paid = {email: (await intake.payment(merchant, customer_email=email))["id"] for email in emails}

    async def found(q: str) -> set[str]:
        page = await owner.page(f"/dashboard/payments?{urlencode({'q': q})}")
        assert page.status_code == 200, page.text[:300]
        return {email for email, payment_id in paid.items() if payment_id in set(_LISTED.findall(page.text))}

    assert await found("ADA") == {"Ada.Lovelace@Example.com", "ada_b@example.com", "adaxb@example.com"}
    assert await found("ada.LOVELACE@example.COM") == {"Ada.Lovelace@Example.com"}
    assert await found("ada_") == {"ada_b@example.com"}, "_ is an underscore, not any one character"
    assert await found("100%") == {"100%off@example.com"}, "% is a percent sign, not anything"
    assert await found("%") == set()
    assert await found("example") == set(), "the start of the address only"
    assert await found(paid["grace@ada.example"]) == {"grace@ada.example"}, "or the payment's id"
