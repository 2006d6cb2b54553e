"""The Stripe adapter reads the provider's answers as hostile: an answer cut short, one that never ends, an empty
200, a proxy's page, or a key that already ran with other parameters is no answer (``ProviderUnavailable``: the
refund is reconciled, never failed), whatever the HTTP client raises. Only Stripe's definite refusals fail it."""

from __future__ import annotations

import pytest

from refundflow_processor.payment_provider import ProviderUnavailable
from refundflow_processor.stripe_provider import StripeProvider
from tests.support.http_servers import hostile_http_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("behaviour", ["cut_short", "drip", "ok", "html_408", "html_404", "idempotency_error"])
async def test_an_answer_that_does_not_arrive_whole_is_no_answer(behaviour: str) -> None:
    async with hostile_http_server(behaviour) as provider_api:
        provider = StripeProvider("sk_test_hostile", f"http://127.0.0.1:{provider_api.port}", timeout_seconds=1.0)
        try:
            with pytest.raises(ProviderUnavailable):
                await provider.create_refund(
                    payment_ref="pi_1", amount=100, currency="EUR", idempotency_key="key_1", refund_id="ref_1"
                )
        finally:
            await provider.close()
    assert provider_api.requests and provider_api.requests[0][0] == "v1/refunds", "the call reached the provider"
