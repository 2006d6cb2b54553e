"""Amounts cross to Stripe in Stripe's units, which are not ISO 4217's for every currency.

Refundflow counts money in ISO 4217 minor units (ISK has no decimals, MGA two). Stripe's API counts ISK with two
decimals (100 is one króna) and MGA with none, and takes three-decimal amounts (KWD, BHD, ...) only in whole tens
(docs.stripe.com/currencies, special cases). Sent as they are, a refund of 5 ISK would refund 0.05 ISK, and one of
MGA 500.00 would refund MGA 50,000. The Stripe adapter, through the official SDK, against our sandbox (which keeps
amounts as it is given them, so what it holds is what Stripe would have been asked for).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from refundflow_processor.payment_provider import ProviderRefused
from refundflow_processor.stripe_provider import StripeProvider
from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Sandbox:
    def __init__(self, url: str) -> None:
        self.url = url
        self.provider = StripeProvider("sk_test_currency_units", url, timeout_seconds=5.0)

    async def refund(self, amount: int, currency: str) -> tuple[str, int]:
        """A refund of ``amount`` ISO minor units through the adapter: its payment intent and the amount read back."""
        payment_intent = f"pi_{uuid.uuid4().hex[:16]}"
        refund = await self.provider.create_refund(
            payment_ref=payment_intent,
            amount=amount,
            currency=currency,
            idempotency_key=f"key_{uuid.uuid4().hex}",
            refund_id=f"ref_{uuid.uuid4().hex[:12]}",
        )
        return payment_intent, refund.amount

    async def held(self, payment_intent: str) -> list[int]:
        """The amounts the provider was asked to refund, in its own units."""
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.url}/v1/_sandbox/refunds", params={"payment_intent": payment_intent})
        body: dict[str, Any] = answer.raise_for_status().json()
        return [refund["amount"] for refund in body["data"]]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with serving(create_sandbox(SandboxSettings(port=0)), free_port()) as url:
        sandbox = Sandbox(url)
        try:
            yield sandbox
        finally:
            await sandbox.provider.close()


@pytest.mark.parametrize(
    ("amount", "currency", "at_stripe"),
    [
        (5, "ISK", 500),  # 5 krónur: Stripe's ISK keeps two decimals
        (50_000, "MGA", 500),  # MGA 500.00: Stripe's MGA has none
        (3_330, "KWD", 3_330),  # three decimals at both, in whole tens
        (4_999, "EUR", 4_999),
        (1_500, "JPY", 1_500),
    ],
)
async def test_an_amount_goes_to_stripe_in_its_units_and_comes_back_in_ours(
    sandbox: Sandbox, amount: int, currency: str, at_stripe: int
) -> None:
    payment_intent, read_back = await sandbox.refund(amount, currency)

    assert await sandbox.held(payment_intent) == [at_stripe]
    assert read_back == amount
    assert [r.amount for r in await sandbox.provider.list_refunds(payment_intent)] == [amount]


@pytest.mark.parametrize(("amount", "currency"), [(50_050, "MGA"), (3_333, "KWD"), (1, "BHD")])
async def test_an_amount_stripe_cannot_take_exactly_is_refused_before_any_call(
    sandbox: Sandbox, amount: int, currency: str
) -> None:
    """MGA 500.50 is half an ariary Stripe cannot count; KWD 3.333 is not in whole tens of fils. Never rounded."""
    with pytest.raises(ProviderRefused) as refused:
        await sandbox.refund(amount, currency)

    assert refused.value.code == "amount_not_representable"
    assert currency in refused.value.message
    async with httpx.AsyncClient() as client:
        everything = (await client.get(f"{sandbox.url}/v1/_sandbox/refunds")).json()
    assert [r for r in everything["data"] if r["currency"] == currency.lower()] == []
