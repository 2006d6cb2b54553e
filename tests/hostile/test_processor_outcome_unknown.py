"""Never report a refund failed when nobody knows (security review, finding 9), nor succeeded when the provider
answers with a refund that is not the one we asked for.

The sandbox cannot make reconciliation itself time out, so these tests use a fake provider: a brown-out in
which every refund is made but its answer never comes back, and listing refunds hangs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import datetime
from typing import Any

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
        self, subscription_id: str, *, until: datetime, idempotency_key: str, metadata: dict[str, str]
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


class AnswersWithARefundItDoesNotList(BrownOutProvider):
    """Answers each refund asked for with one of another amount, which the payment's refunds, listed, do not show:
    the answer is not ours, and a refund may still have been made under the key."""

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return []


async def test_a_key_answered_with_a_refund_that_is_not_ours_is_never_replaced_by_a_new_key(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Listing no refund of ours proves nothing about a key the provider answered with a refund: a new key could
    refund the customer twice. The refund stays unknown, reconciled only."""
    provider = AnswersWithARefundItDoesNotList(amount_shift=10_000, answers=True)
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)

        async def reconciled_or_called_again() -> bool:
            tries = await processor.db.fetchval(
                "SELECT tries FROM refund_attempts WHERE refund_id = $1 AND attempt = 1", approved.refund_id
            )
            return provider.create_calls > 1 or (tries or 0) >= 4

        await eventually(reconciled_or_called_again, timeout=30)
        assert provider.create_calls == 1, "no new key"
        assert await processor.attempts(approved.refund_id) == ["unknown"]
        assert await processor.refund_status(approved.refund_id) == "processing"
        assert await processor.staged("refund.failed", about=approved.refund_id) == []
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
        assert alert["kind"] == "provider_answer_mismatch"


class AnswersWithAnotherRefund(BrownOutProvider):
    """Answers each refund asked for, of the amount asked, with a refund whose own fields say it is another:
    ``other`` replaces them (its payment, or the refund it was made for). Listing our payment shows none."""

    def __init__(self, **other: Any) -> None:
        super().__init__(answers=True)
        self._other = other

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        made = await super().create_refund(
            payment_ref=payment_ref,
            amount=amount,
            currency=currency,
            idempotency_key=idempotency_key,
            refund_id=refund_id,
        )
        return replace(made, **self._other)

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return []


@pytest.mark.parametrize(
    "other",
    [{"payment_ref": "pi_of_someone_else"}, {"metadata": {"refund_id": "ref_of_someone_else"}}],
    ids=["another payment", "another refund"],
)
async def test_a_provider_answer_for_another_payment_or_refund_is_not_recorded_as_ours(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, other: dict[str, Any]
) -> None:
    provider = AnswersWithAnotherRefund(**other)
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)

        async def alerted_or_recorded() -> bool:
            alerts = await processor.staged("team_alert.raised", about=approved.refund_id)
            return bool(alerts) or await processor.refund_status(approved.refund_id) in ("succeeded", "failed")

        await eventually(alerted_or_recorded, timeout=30)
        assert await processor.staged("refund.succeeded", about=approved.refund_id) == []
        [alert] = await processor.staged("team_alert.raised", about=approved.refund_id)
        assert alert["kind"] == "provider_answer_mismatch"
        await reconciled_again(processor, approved.refund_id, 3)
        assert await processor.attempts(approved.refund_id) == ["unknown"]
        assert await processor.refund_status(approved.refund_id) == "processing"
        assert provider.create_calls == 1


class OneRefundForEveryone(BrownOutProvider):
    """A hostile (or broken) provider: every refund asked for is answered with the same provider refund, of the
    amount asked and carrying the asking refund's id; listing a payment's refunds shows it too."""

    def __init__(self) -> None:
        super().__init__(answers=True)
        self.recovered.set()
        self.calls: Counter[str] = Counter()  # create calls, per refund of ours
        self.answered: dict[str, ProviderRefund] = {}  # per payment intent

    async def create_refund(
        self, *, payment_ref: str, amount: int, currency: str, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        self.calls[refund_id] += 1
        answer = ProviderRefund("re_shared", "succeeded", amount, currency, None, {"refund_id": refund_id})
        self.answered[payment_ref] = answer
        return answer

    async def list_refunds(self, payment_ref: str) -> list[ProviderRefund]:
        return [self.answered[payment_ref]] if payment_ref in self.answered else []


async def test_a_provider_answer_already_recorded_for_another_refund_is_not_ours(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The answer's refund is already recorded as another refund's: the refund is not recorded as succeeded, the
    team is told once, and the provider is never called again for it (only asked, while the outcome is unknown)."""
    provider = OneRefundForEveryone()
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider=provider) as processor:
        first = approval(payment_intent())
        await processor.publish(first)
        await eventually(lambda: _status_is(processor, first.refund_id, "succeeded"), timeout=30)
        second = approval(payment_intent())  # the same amount and currency
        await processor.publish(second)

        async def alerted_or_called_again() -> bool:
            alerts = await processor.staged("team_alert.raised", about=second.refund_id)
            return bool(alerts) or provider.calls[second.refund_id] > 3

        await eventually(alerted_or_called_again, timeout=30)
        assert provider.calls[second.refund_id] == 1, "the same key is not called again and again"
        [alert] = await processor.staged("team_alert.raised", about=second.refund_id)
        assert alert["kind"] == "provider_answer_mismatch"
        assert "re_shared" in alert["details"]["error"] and first.refund_id in alert["details"]["error"]

        await reconciled_again(processor, second.refund_id, 3)
        assert await processor.attempts(second.refund_id) == ["unknown"]
        assert await processor.refund_status(second.refund_id) == "processing"
        assert await processor.staged("refund.succeeded", about=second.refund_id) == []
        assert len(await processor.staged("team_alert.raised", about=second.refund_id)) == 1
        assert provider.calls == {first.refund_id: 1, second.refund_id: 1}
        assert await processor.refund_status(first.refund_id) == "succeeded"


async def _status_is(processor: ProcessorUnderTest, refund_id: str, status: str) -> bool:
    return await processor.refund_status(refund_id) == status
