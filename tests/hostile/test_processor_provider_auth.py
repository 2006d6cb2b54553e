"""A refused API key is a configuration fault, not a refund failure (security review, finding 20)."""

from __future__ import annotations

from functools import partial

import pytest

from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    ProcessorUnderTest,
    approval,
    payment_intent,
    running_processor,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
KEY = "sk_test_processor"  # the harness's key


async def auth_alerts(processor: ProcessorUnderTest, merchant_id: str) -> list[dict[str, object]]:
    alerts = await processor.staged("team_alert.raised", about=merchant_id)
    return [a for a in alerts if a["kind"] == "provider_auth_failed"]


async def test_refunds_wait_while_the_key_is_refused_and_each_merchant_is_alerted_once_per_episode(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The test counts the refund's tries: a call timed out on a loaded machine must not count as one more.
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, **PATIENT_CLIENT) as processor:
        await processor.sandbox("POST", f"api_keys/{KEY}/revoke")  # the key was rolled at Stripe
        first = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_a"})
        second = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_b"})
        await processor.publish(first)
        await processor.publish(second)

        async def refused_several_times() -> bool:
            return int((await processor.sandbox("GET", f"api_keys/{KEY}"))["refused_requests"]) >= 6

        await eventually(refused_several_times, timeout=60)
        for approved in (first, second):
            assert await processor.refund_status(approved.refund_id) == "processing"
            assert await processor.attempts(approved.refund_id) == ["scheduled"]
            assert await processor.staged("refund.failed", about=approved.refund_id) == []
            assert len(await auth_alerts(processor, approved.merchant_id)) == 1
        tries = await processor.db.fetchval(
            "SELECT max(tries) FROM refund_attempts WHERE refund_id = $1", first.refund_id
        )
        assert tries == 0, "a refused key spends none of the refund's retry budget"

        await processor.sandbox("POST", f"api_keys/{KEY}/restore")  # the new key is deployed
        for approved in (first, second):
            await eventually(partial(_status_is, processor, approved.refund_id, "succeeded"), timeout=30)
            assert len(await processor.provider_refunds(approved.provider_payment_id)) == 1
            assert len(await auth_alerts(processor, approved.merchant_id)) == 1

        # A new episode is alerted anew.
        await processor.sandbox("POST", f"api_keys/{KEY}/revoke")
        third = approval(payment_intent()).model_copy(update={"merchant_id": "mer_auth_a"})
        await processor.publish(third)

        async def alerted_again() -> bool:
            return len(await auth_alerts(processor, third.merchant_id)) == 2

        await eventually(alerted_again, timeout=30)
        await processor.sandbox("POST", f"api_keys/{KEY}/restore")
        await eventually(lambda: _status_is(processor, third.refund_id, "succeeded"), timeout=30)


async def _status_is(processor: ProcessorUnderTest, refund_id: str, status: str) -> bool:
    return await processor.refund_status(refund_id) == status
