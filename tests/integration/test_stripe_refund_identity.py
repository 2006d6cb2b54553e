"""What identifies a refund in the provider's answer reaches the processor: the Stripe adapter, through the official
SDK, against our sandbox (which answers as Stripe does). The processor believes an answer only if it names our
payment and our refund (``attempts._verdict``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from refundflow_processor.stripe_provider import StripeProvider
from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def provider() -> AsyncIterator[StripeProvider]:
    async with serving(create_sandbox(SandboxSettings(port=0)), free_port()) as url:
        provider = StripeProvider("sk_test_refund_identity", url, timeout_seconds=5.0)
        try:
            yield provider
        finally:
            await provider.close()


async def test_a_refund_read_back_names_its_payment_and_our_refund(provider: StripeProvider) -> None:
    payment_intent, refund_id = f"pi_{uuid.uuid4().hex[:16]}", f"ref_{uuid.uuid4().hex[:12]}"
    made = await provider.create_refund(
        payment_ref=payment_intent,
        amount=1_000,
        currency="EUR",
        idempotency_key=f"key_{uuid.uuid4().hex}",
        refund_id=refund_id,
    )

    for read_back in (made, await provider.get_refund(made.id), *await provider.list_refunds(payment_intent)):
        assert (read_back.payment_ref, read_back.refund_id) == (payment_intent, refund_id)
