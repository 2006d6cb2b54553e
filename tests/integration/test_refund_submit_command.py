"""The refund.submit command topic: requests from other platform services, refusals answered and parked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from refundflow_shared.events import RefundSubmit, dlq_topic, topic_for
from refundflow_shared.service_runtime import ServiceRuntime
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.kafka_reader import dead_letter_of, headers_of, read_topic
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


def command(payment: dict[str, Any], merchant_id: str, **fields: Any) -> RefundSubmit:
    values: dict[str, Any] = {
        "payment_id": payment["id"],
        "merchant_id": merchant_id,
        "idempotency_key": "support-ticket-1",
        "reason": "technical_issue",
        "amount": 1_000,
        "submitted_by": "support-desk",
        **fields,
    }
    return RefundSubmit.model_validate(values)


async def test_a_command_creates_one_request_however_often_it_is_sent(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    submit = command(payment, await intake.merchant_id(merchant))
    await intake.publish(submit, source="refundflow/support-desk")
    await intake.publish(submit, source="refundflow/support-desk")

    async def handled_both() -> bool:
        return int(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_type = 'refund.submit'")) >= 2

    await eventually(handled_both, timeout=30)
    refunds = (await intake.client.get("/v1/refunds", headers=merchant, params={"payment_id": payment["id"]})).json()
    assert [(r["amount"], r["channel"], r["status"]) for r in refunds["data"]] == [(1_000, "command", "pending")]
    refund = (await intake.client.get(f"/v1/refunds/{refunds['data'][0]['id']}", headers=merchant)).json()
    assert refund["timeline"][0]["actor"] == "service:support-desk"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"amount": 20_000}, "refund_exceeds_refundable"),
        ({"amount": 0}, "invalid_amount"),
        ({"reason": "bored"}, "invalid_reason"),
        ({"currency": "USD"}, "currency_mismatch"),
        ({"payment_id": "pay_unknown"}, "payment_not_found"),
    ],
)
async def test_a_refused_command_is_answered_and_parked_with_its_reason(
    intake: IntakeUnderTest, fields: dict[str, Any], code: str
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    submit = command(payment, await intake.merchant_id(merchant), **fields)
    sent = await intake.publish(submit)

    async def answered() -> bool:
        return bool(await intake.staged("refund.submit_rejected", submit.payment_id))

    await eventually(answered, timeout=30)
    [answer] = await intake.staged("refund.submit_rejected", submit.payment_id)
    assert (answer["idempotency_key"], answer["code"]) == ("support-ticket-1", code)
    assert answer["message"]
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", submit.payment_id) == 0

    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = [r for r in await read_topic(intake.settings.kafka_bootstrap_servers, dlq, expected=1, timeout=20)]
    mine = [headers_of(r) for r in parked if headers_of(r)["ce_id"] == str(sent.id)]
    assert [(h["dlq_reason"], h["dlq_consumer"]) for h in mine] == [(code, "intake")]


async def test_a_refusal_parked_while_the_broker_does_not_answer_is_answered_and_parked_once_it_does(
    intake: IntakeUnderTest,
) -> None:
    """The refusal is parked from within the handler's transaction: a broker that times out then (no in-sync
    replica for a while, say) is waited out, as the database is. It was handled as a bug: dead-lettered as
    handler_error, its answer rolled back, the sender never told."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    submit = command(payment, await intake.merchant_id(merchant), reason="bored")
    runtime: ServiceRuntime = intake.app.state.runtime
    publish = runtime.broker.publish
    timeouts = ["no in-sync replica answered"]

    async def publish_timing_out_once(*args: Any, **kwargs: Any) -> Any:
        if timeouts and str(args[1]).endswith(".dlq"):  # what a broker without its replicas does to a produce
            raise KafkaTimeoutError(timeouts.pop())
        return await publish(*args, **kwargs)

    runtime.broker.publish = publish_timing_out_once  # type: ignore[method-assign]
    try:
        sent = await intake.publish(submit)

        async def answered() -> bool:
            return bool(await intake.staged("refund.submit_rejected", submit.payment_id))

        await eventually(answered, timeout=30)
    finally:
        runtime.broker.publish = publish  # type: ignore[method-assign]
    assert not timeouts, "the broker timed out on the refusal's dead letter"
    [answer] = await intake.staged("refund.submit_rejected", submit.payment_id)
    assert answer["code"] == "invalid_reason"
    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "invalid_reason"


async def test_a_proration_that_comes_to_nothing_is_refused_as_one(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=49)
    # 49 × 1/100 = 0.49 minor units: rounds to 0, which is no refund (not one that exceeds the 49 refundable).
    proration = {"affected_days": 1, "period_days": 100}
    submit = command(payment, await intake.merchant_id(merchant), amount=None, proration=proration)
    await intake.publish(submit)

    async def answered() -> bool:
        return bool(await intake.staged("refund.submit_rejected", submit.payment_id))

    await eventually(answered, timeout=30)
    [answer] = await intake.staged("refund.submit_rejected", submit.payment_id)
    assert answer["code"] == "invalid_proration"
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", submit.payment_id) == 0
