"""Never report a refund failed when nobody knows (security review, finding 9), nor succeeded when the provider
answers with a refund that is not the one we asked for.

The sandbox cannot make reconciliation itself time out, so these tests use a fake provider: a brown-out in
which every refund is made but its answer never comes back, and listing refunds hangs.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from refundflow_processor.payment_provider import ProviderRefund, ProviderSubscription, ProviderUnavailable
from tests.support.probe_service import eventually
from tests.support.processor_harness import ProcessorUnderTest, approval, payment_intent, running_processor

pytestmark = pytest.mark.asyncio(loop_scope="session")


class BrownOutProvider:
    """Makes each refund asked for (once per idempotency key), then loses the answer; listing hangs until
    ``recovered``. ``amount_shift`` makes it refund a different amount than asked."""

    name = "stripe"

    def __init__(self, *, amount_shift: int = 0, answers: bool = False) -> None:
        self.by_key: dict[str, ProviderRefund] = {}
        self.create_calls = 0
        self.recovered = asyncio.Event()
        self._amount_shift, self._answers = amount_shift, answers

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        self.create_calls += 1
        made = self.by_key.setdefault(
            idempotency_key,
            ProviderRefund(
                f"re_{len(self.by_key)}",
                "succeeded",
                amount + self._amount_shift,
                currency,
                None,
                {"refund_id": refund_id},
            ),
        )
        if self._answers:
            return made
        raise ProviderUnavailable("read timeout")

    async def get_refund(self, provider_refund_id: str) -> ProviderRefund:
        raise ProviderUnavailable("read timeout")

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        await self.recovered.wait()  # the call deadline ends the wait until then
        return list(self.by_key.values())

    async def cancel_subscription(self, subscription_id: str, *, at_period_end: bool) -> ProviderSubscription:
        raise ProviderUnavailable("read timeout")

    async def get_subscription(self, subscription_id: str) -> ProviderSubscription:
        raise ProviderUnavailable("read timeout")

    async def extend_subscription(
        self, subscription_id: str, *, until: datetime, idempotency_key: str
    ) -> ProviderSubscription:
        raise ProviderUnavailable("read timeout")


async def reconciled_again(processor: ProcessorUnderTest, refund_id: str, times: int) -> None:
    async def tried() -> bool:
        tries = await processor.db.fetchval("SELECT tries FROM refund_attempts WHERE refund_id = $1", refund_id)
        return bool(tries and tries >= times)

    await eventually(tried, timeout=60)


async def test_a_refund_whose_outcome_cannot_be_reconciled_stays_processing_and_alerts_once(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = BrownOutProvider()
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)
        budget = processor.settings.provider_retry_budget

        # The budget is spent, and reconciliation times out again and again: the outcome is unknown.
        await reconciled_again(processor, approved.refund_id, budget + 3)
        assert await processor.attempts(approved.refund_id) == ["unknown"]
        assert await processor.refund_status(approved.refund_id) == "processing"
        assert await processor.staged("refund.failed", about=approved.refund_id) == []
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
        assert alert["kind"] == "refund_outcome_unknown"
        assert provider.create_calls == budget, "while unknown, the provider is only asked, never called again"

        provider.recovered.set()  # reconciliation runs at last, and finds the refund the first call made
        await eventually(lambda: _status_is(processor, approved.refund_id, "succeeded"), timeout=30)
        [made] = provider.by_key.values()
        [succeeded] = await processor.staged("refund.succeeded", about=approved.refund_id)
        assert succeeded["provider_refund_id"] == made.id
        assert len(provider.by_key) == 1 and provider.create_calls == budget
        assert len(await processor.staged("team_alert.raised", about=approved.refund_id)) == 1


async def test_a_provider_answer_for_another_amount_is_not_recorded_as_our_refund(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    provider = BrownOutProvider(amount_shift=10_000, answers=True)
    provider.recovered.set()
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)

        async def alerted() -> bool:
            return bool(await processor.staged("team_alert.raised", about=approved.refund_id))

        await eventually(alerted, timeout=30)
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
        assert alert["kind"] == "provider_answer_mismatch"
        await reconciled_again(processor, approved.refund_id, 3)
        assert await processor.refund_status(approved.refund_id) == "processing"
        assert await processor.staged("refund.succeeded", about=approved.refund_id) == []
        assert len(await processor.staged("team_alert.raised", about=approved.refund_id)) == 1
        assert provider.create_calls == 1


async def _status_is(processor: ProcessorUnderTest, refund_id: str, status: str) -> bool:
    return await processor.refund_status(refund_id) == status
