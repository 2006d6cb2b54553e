"""The processor executes each approved refund exactly once at the provider (the sandbox, via Stripe's SDK)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
import stripe

from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from refundflow_shared.events import (
    CustomerErased,
    Event,
    PaymentSucceeded,
    Product,
    SubscriptionCancelRequested,
    dlq_topic,
    topic_for,
)
from tests.conftest import create_database
from tests.support.http_servers import serving
from tests.support.kafka_reader import dead_letter_of
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    ProcessorUnderTest,
    approval,
    deliver_webhook,
    payment_intent,
    publish_with_its_payment,
    running_processor,
    subscription_paid,
)
from tests.support.raw_records import RawRecord, produce, raw_headers

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    """One processor for the module, webhooks on; every test uses its own payments and refunds. Its tests count the
    provider's calls and attempts (the retry budget): a slow answer on a loaded machine must not be one more
    failure. The test of a client timeout runs its own processor, with the harness's short one."""
    async with running_processor(
        await create_database(postgres_url), kafka_bootstrap, "tproc.", **PATIENT_CLIENT
    ) as running:
        yield running


async def finished(processor: ProcessorUnderTest, refund_id: str, status: str) -> None:
    async def reached() -> bool:
        return await processor.refund_status(refund_id) == status

    await eventually(reached, timeout=30)


async def test_an_approved_refund_is_made_once_and_reported_with_the_payments_totals(
    processor: ProcessorUnderTest,
) -> None:
    intent = payment_intent()
    approved = approval(intent, amount=2_500)
    await processor.publish(approved)

    await finished(processor, approved.refund_id, "succeeded")
    [made] = await processor.provider_refunds(intent)
    assert (made["amount"], made["metadata"]) == (2_500, {"refund_id": approved.refund_id})
    [succeeded] = await processor.events("refund.succeeded", expected=1, about=approved.refund_id)
    assert succeeded["provider_refund_id"] == made["id"]
    [totals] = await processor.events("payment.refunded", expected=1, about=approved.refund_id)
    assert (totals["refunded_amount"], totals["remaining_amount"]) == (2_500, 7_500)


async def test_an_approval_of_nothing_is_refused_by_the_events_schema_not_by_the_database(
    processor: ProcessorUnderTest, kafka_bootstrap: str
) -> None:
    # Built without validation: the schema of today refuses it, as an older or a broken producer's would not.
    approved = approval(payment_intent()).model_copy(update={"amount": 0})
    event = await processor.publish(approved)

    topic = dlq_topic(topic_for(event.type, processor.settings.topic_prefix))
    headers = await dead_letter_of(kafka_bootstrap, topic, event.id, timeout=60)
    assert (headers["dlq_reason"], headers["dlq_error"]) == ("validation_failed", "amount: greater_than")
    assert await processor.refund_status(approved.refund_id) is None


async def test_an_approval_carrying_fields_of_a_newer_intake_is_made_not_dead_lettered(
    processor: ProcessorUnderTest, kafka_bootstrap: str
) -> None:
    """A newer intake writes fields this processor does not know (a rolling deploy, or the approvals a rewound
    processor reads again after a rollback, to adopt what the newer one refunded): it reads past them."""
    intent = payment_intent()
    approved = approval(intent, amount=2_500)
    event = Event.wrap(approved, source="refundflow/intake", sequence=1)
    newer = {**json.loads(event.kafka_value()), "approval_note_format": "markdown"}
    topic = topic_for(event.type, processor.settings.topic_prefix)
    await produce(
        kafka_bootstrap,
        [RawRecord(topic, event.partition_key.encode(), raw_headers(event), json.dumps(newer).encode())],
    )

    await finished(processor, approved.refund_id, "succeeded")
    [made] = await processor.provider_refunds(intent)
    assert made["amount"] == 2_500


async def test_a_second_refund_of_a_payment_reports_both_in_the_totals(processor: ProcessorUnderTest) -> None:
    intent = payment_intent()
    first = approval(intent, amount=2_500)
    await processor.publish(first)
    await finished(processor, first.refund_id, "succeeded")
    second = approval(intent, amount=1_000).model_copy(
        update={"payment_id": first.payment_id, "merchant_id": first.merchant_id}
    )
    await processor.publish(second)

    await finished(processor, second.refund_id, "succeeded")
    assert await processor.attempts(second.refund_id) == ["succeeded"]
    [totals] = await processor.events("payment.refunded", expected=1, about=second.refund_id)
    assert (totals["refunded_amount"], totals["remaining_amount"]) == (3_500, 6_500)


async def test_an_approval_delivered_twice_refunds_once(processor: ProcessorUnderTest) -> None:
    intent = payment_intent()
    approved = approval(intent)
    await processor.publish(approved)
    await processor.publish(approved)  # same refund, a second event (e.g. intake's relay re-sent it)

    await finished(processor, approved.refund_id, "succeeded")
    assert len(await processor.provider_refunds(intent)) == 1
    assert await processor.attempts(approved.refund_id) == ["succeeded"]


@pytest.mark.parametrize("reason", ["insufficient_funds", "expired_or_canceled_card", "lost_or_stolen_card"])
async def test_a_refund_the_provider_fails_is_reported_with_its_reason(
    processor: ProcessorUnderTest, reason: str
) -> None:
    approved = approval(payment_intent(f"fail_{reason}_"))
    await processor.publish(approved)

    await finished(processor, approved.refund_id, "failed")
    [failed] = await processor.events("refund.failed", expected=1, about=approved.refund_id)
    assert failed["failure_reason"] == reason
    assert reason in failed["failure_message"], "the provider's raw answer is kept"


async def test_a_pending_refund_finishes_through_the_providers_signed_webhook(processor: ProcessorUnderTest) -> None:
    # The module's sync job only polls refunds pending for 300 s: within this test, only the webhook can finish it.
    intent = payment_intent("pending_")
    approved = approval(intent)
    await processor.publish(approved)

    async def pending_at_provider() -> bool:
        return await processor.attempts(approved.refund_id) == ["provider_pending"]

    await eventually(pending_at_provider, timeout=30)
    assert await processor.refund_status(approved.refund_id) == "processing"
    await finished(processor, approved.refund_id, "succeeded")
    assert len(await processor.events("refund.succeeded", expected=1, about=approved.refund_id)) == 1


async def test_a_webhook_with_a_forged_signature_is_refused(processor: ProcessorUnderTest) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{processor.url}/v1/provider-webhooks/stripe",
            content=b'{"type": "refund.updated", "data": {"object": {"id": "re_x", "status": "succeeded"}}}',
            headers={"Stripe-Signature": "t=1,v1=forged"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_webhook_signature"


async def test_a_webhook_about_a_refund_still_being_executed_is_to_be_delivered_again(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Stripe delivers a webhook again only if it was not answered 2xx. One about our refund whose attempt has not
    recorded the provider's refund yet (the call that made it got no answer) is answered 409 until it has; one
    about a refund that is not ours is answered 200, or Stripe would deliver it for days."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider_reachable=False) as processor:
        intent = payment_intent()
        approved = approval(intent)
        await processor.publish(approved)

        async def executing() -> bool:
            return await processor.attempts(approved.refund_id) in (["scheduled"], ["unknown"])

        await eventually(executing, timeout=30)
        failed_at_provider = {
            "id": f"re_{uuid.uuid4().hex[:14]}",
            "object": "refund",
            "amount": approved.amount,
            "currency": approved.currency.lower(),
            "payment_intent": intent,
            "status": "failed",
            "failure_reason": "declined",
            "metadata": {"refund_id": approved.refund_id},
        }
        ours = await deliver_webhook(processor, "refund.failed", failed_at_provider)
        assert ours.status_code == 409
        assert ours.json()["error"]["code"] == "refund_in_flight"

        not_ours = {**failed_at_provider, "id": f"re_{uuid.uuid4().hex[:14]}", "metadata": {"refund_id": "ref_other"}}
        answer = await deliver_webhook(processor, "refund.failed", not_ours)
        assert (answer.status_code, answer.json()) == (200, {"received": True, "handled": False})
        assert await processor.refund_status(approved.refund_id) == "processing"


async def test_server_errors_under_one_key_are_reconciled_before_a_new_key_is_used(
    processor: ProcessorUnderTest,
) -> None:
    intent = payment_intent("flaky_")  # the first two keys get a stored 500, the third works
    approved = approval(intent)
    await processor.publish(approved)

    await finished(processor, approved.refund_id, "succeeded")
    assert len(await processor.provider_refunds(intent)) == 1
    assert await processor.attempts(approved.refund_id) == ["abandoned", "abandoned", "succeeded"]


async def test_a_500_after_the_refund_was_made_is_reconciled_not_refunded_twice(processor: ProcessorUnderTest) -> None:
    intent = payment_intent("error500_after_create_")
    approved = approval(intent)
    await processor.publish(approved)

    await finished(processor, approved.refund_id, "succeeded")
    [made] = await processor.provider_refunds(intent)
    assert made["metadata"]["refund_id"] == approved.refund_id
    assert await processor.attempts(approved.refund_id) == ["succeeded"], "adopted under the first key"


async def test_a_client_timeout_retries_with_the_same_key_and_refunds_once(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The harness's client gives up after 1 s; the sandbox answers the first call after 1.5 s.
    async with running_processor(database_url, kafka_bootstrap, topic_prefix) as processor:
        intent = payment_intent("timeout_")  # the first answer comes after our client gave up; the refund exists
        approved = approval(intent)
        await processor.publish(approved)

        await finished(processor, approved.refund_id, "succeeded")
        assert len(await processor.provider_refunds(intent)) == 1
        assert await processor.attempts(approved.refund_id) == ["succeeded"]


async def test_a_refund_made_in_the_providers_dashboard_is_detected_once(processor: ProcessorUnderTest) -> None:
    intent = payment_intent()
    paid = PaymentSucceeded(
        payment_id=f"pay_{intent}",
        merchant_id="mer_test",
        amount=10_000,
        currency="EUR",
        customer_email="ada@example.com",
        provider_payment_id=intent,
        paid_at=datetime.now(UTC),
        product=Product(id="prod", name="Pro", kind="one_time"),
    )
    await processor.publish(paid)
    dashboard = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": processor.sandbox_url})
    made = await dashboard.v1.refunds.create_async(params={"payment_intent": intent, "amount": 1_200})

    [detected] = await processor.events("refund.external_detected", expected=1, about=made.id)
    assert (detected["payment_id"], detected["amount"], detected["status"]) == (paid.payment_id, 1_200, "succeeded")
    await eventually(lambda: _scanned_again(processor, paid.payment_id), timeout=20)
    assert len(await processor.staged("refund.external_detected", about=made.id)) == 1, "detected once"


async def test_a_payment_of_nothing_is_acknowledged_not_remembered(processor: ProcessorUnderTest) -> None:
    """A free trial's invoice or a 100% coupon is a payment of 0: nothing on it can be refunded, so there is nothing
    to scan; it was dead-lettered (the payments table holds amounts above 0), a legitimate event parked."""
    intent = payment_intent()
    free = PaymentSucceeded(
        payment_id=f"pay_{intent}",
        merchant_id="mer_test",
        amount=0,
        currency="EUR",
        customer_email="ada@example.com",
        provider_payment_id=intent,
        paid_at=datetime.now(UTC),
        product=Product(id="prod", name="Pro", kind="subscription"),
    )
    sent = await processor.publish(free)

    async def handled() -> bool:
        return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", sent.id))

    await eventually(handled, timeout=30)
    assert await processor.db.fetchval("SELECT count(*) FROM payments WHERE payment_id = $1", free.payment_id) == 0


async def test_a_payment_whose_provider_payment_no_refund_can_name_is_dead_lettered_not_scanned(
    processor: ProcessorUnderTest,
) -> None:
    """An invoice's id, say: it was remembered, and the sync job's every scan of it failed at Stripe."""
    paid = subscription_paid("mer_test", f"pay_{uuid.uuid4().hex[:12]}", "sub_invoiced")
    paid = paid.model_copy(update={"provider_payment_id": "in_1Qx"})
    sent = await processor.publish(paid)

    dlq = dlq_topic(topic_for("payment.succeeded", processor.settings.topic_prefix))
    parked = await dead_letter_of(processor.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "handler_error"
    assert parked["dlq_error"].startswith("UnsupportedProviderPayment: provider_payment_id 'in_1Qx' is neither")
    for table in ("payments", "payment_subscriptions"):
        remembered = await processor.db.fetchval(f"SELECT count(*) FROM {table} WHERE payment_id = $1", paid.payment_id)
        assert remembered == 0, table


@pytest.mark.parametrize(
    "other", [{"amount": 1_500, "currency": "JPY"}, {"amount": 1_500}, {"currency": "USD"}],
    ids=["amount and currency", "amount", "currency"],
)  # fmt: skip
async def test_billings_payment_of_a_known_provider_payment_with_other_money_is_dead_lettered_not_linked(
    processor: ProcessorUnderTest, other: dict[str, object]
) -> None:
    """Billing's own id for a provider payment the processor knows under intake's id was linked to it whatever money
    billing said (EUR 100.00 registered, billing saying JPY 1,500), where intake refuses it: the two services then
    disagreed on which payment billing's id names. It is dead-lettered, as intake does, and not linked."""
    intent = payment_intent()
    registered = subscription_paid("mer_test", f"pay_{uuid.uuid4().hex[:12]}", "sub_aliased")
    registered = registered.model_copy(update={"provider_payment_id": intent, "amount": 10_000, "currency": "EUR"})
    await _handled(processor, await processor.publish(registered))  # billing's comes after, on another partition
    billing = registered.model_copy(update={"payment_id": f"bill_{uuid.uuid4().hex[:8]}", **other})
    sent = await processor.publish(billing)

    dlq = dlq_topic(topic_for("payment.succeeded", processor.settings.topic_prefix))
    parked = await dead_letter_of(processor.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_error"].startswith("DuplicatePayment: ") and billing.payment_id in parked["dlq_error"]
    aliases = "SELECT count(*) FROM payment_aliases WHERE payment_id = $1"
    assert await processor.db.fetchval(aliases, billing.payment_id) == 0, "billing's id is not linked to the payment"


async def test_billings_payment_of_a_known_provider_payment_with_the_same_money_is_linked(
    processor: ProcessorUnderTest,
) -> None:
    """Billing describes the customer and product in its own words: only the money must agree."""
    intent = payment_intent()
    registered = subscription_paid("mer_test", f"pay_{uuid.uuid4().hex[:12]}", "sub_aliased")
    registered = registered.model_copy(update={"provider_payment_id": intent})
    await _handled(processor, await processor.publish(registered))  # billing's comes after, on another partition
    billing = registered.model_copy(
        update={"payment_id": f"bill_{uuid.uuid4().hex[:8]}", "customer_email": "billing@example.com"}
    )
    await processor.publish(billing)

    async def linked() -> bool:
        aliases = "SELECT count(*) FROM payment_aliases WHERE payment_id = $1 AND provider_payment_id = $2"
        return bool(await processor.db.fetchval(aliases, billing.payment_id, intent))

    await eventually(linked, timeout=30)


async def _handled(processor: ProcessorUnderTest, event: Event) -> None:
    async def in_inbox() -> bool:
        return bool(await processor.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id))

    await eventually(in_inbox, timeout=30)


async def _scanned_again(processor: ProcessorUnderTest, payment_id: str) -> bool:
    scanned = await processor.db.fetchval(
        "SELECT last_synced_at > (SELECT detected_at FROM external_refunds WHERE payment_id = $1) FROM payments"
        " WHERE payment_id = $1",
        payment_id,
    )
    return bool(scanned)


@pytest.mark.parametrize("at_period_end", [False, True])
async def test_a_subscription_is_canceled_now_or_at_the_period_end(
    processor: ProcessorUnderTest, at_period_end: bool
) -> None:
    subscription_id = f"sub_{payment_intent()}"
    await publish_with_its_payment(
        processor,
        SubscriptionCancelRequested(
            payment_id=f"pay_{subscription_id}",
            merchant_id="mer_test",
            subscription_id=subscription_id,
            at_period_end=at_period_end,
            requested_by="api_key:key_test",
        ),
    )

    [canceled] = await processor.events("subscription.canceled", expected=1, about=subscription_id)
    assert canceled["at_period_end"] is at_period_end and canceled["ends_at"]
    provider = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    subscription = (await provider.v1.subscriptions.retrieve_async(subscription_id)).to_dict()
    assert subscription["status"] == ("active" if at_period_end else "canceled")
    assert subscription["cancel_at_period_end"] is at_period_end


async def test_refunds_answered_together_are_each_recorded_in_their_own_trace(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The provider answers every call after 300 ms: the attempts, called together, are answered together and
    # recorded in shared transactions. Each outcome's event must still continue its own approval's trace.
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, sandbox={"latency_ms": 300}) as processor:
        traces = {}
        for _ in range(12):
            approved = approval(payment_intent())
            traces[approved.refund_id] = uuid.uuid4().hex
            await processor.publish(approved, traceparent=f"00-{traces[approved.refund_id]}-{'1' * 16}-01")
        for refund_id in traces:
            await finished(processor, refund_id, "succeeded")

        rows = await processor.db.fetch("SELECT headers, payload FROM outbox WHERE event_type = 'refund.succeeded'")
        recorded = {json.loads(r["payload"])["refund_id"]: json.loads(r["headers"])["ce_traceparent"] for r in rows}
        assert {refund_id: recorded[refund_id].split("-")[1] for refund_id in traces} == traces


async def test_a_pending_refund_finishes_through_the_sync_job_when_webhooks_are_off(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url, kafka_bootstrap, topic_prefix, webhooks=False, sync_pending_after_seconds=1.5
    ) as processor:
        approved = approval(payment_intent("pending_"))
        await processor.publish(approved)
        await finished(processor, approved.refund_id, "succeeded")
        assert len(await processor.events("refund.succeeded", expected=1, about=approved.refund_id)) == 1


async def test_a_provider_outage_beyond_the_retry_budget_is_waited_out_and_the_refund_made_once(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """An outage of minutes (connection refused) spent the retry budget; once the provider was back, reconciliation
    found no refund (none could be made) and the refund failed provider_unavailable: the customer was told it
    failed, the merchant had to approve it again. The budget spent only on calls without an answer now starts over
    with a new key (the provider proved the old one made none), within PROVIDER_OUTAGE_GIVE_UP_HOURS of approval."""
    async with running_processor(database_url, kafka_bootstrap, topic_prefix, provider_reachable=False) as processor:
        intent = payment_intent()
        approved = approval(intent)
        await processor.publish(approved)

        # Unreachable even to reconcile: nobody can say whether a refund exists, so nothing is failed.
        [alert] = await processor.events("team_alert.raised", expected=1, about=approved.refund_id)
        assert alert["kind"] == "refund_outcome_unknown"
        assert await processor.attempts(approved.refund_id) == ["unknown"]
        assert await processor.refund_status(approved.refund_id) == "processing"

        # The provider comes back and proves it holds no refund: a new key makes it, once.
        port = urlsplit(processor.settings.stripe_api_base).port
        assert port is not None
        async with serving(create_sandbox(SandboxSettings(port=port)), port) as provider_url:
            await finished(processor, approved.refund_id, "succeeded")
            async with httpx.AsyncClient() as client:
                listed = await client.get(f"{provider_url}/v1/_sandbox/refunds", params={"payment_intent": intent})
            [made] = listed.json()["data"]
            assert made["metadata"]["refund_id"] == approved.refund_id
        assert await processor.attempts(approved.refund_id) == ["abandoned", "succeeded"]
        assert not await processor.staged("refund.failed", about=approved.refund_id)
        assert not await processor.staged("provider.unavailable", about=approved.refund_id)
        alerts = await processor.staged("team_alert.raised", about=approved.refund_id)
        assert [a["kind"] for a in alerts] == ["refund_outcome_unknown"], "alerted once"


async def test_a_provider_down_past_the_outage_window_fails_the_refund_only_once_it_proves_no_refund_exists(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        provider_reachable=False,
        provider_outage_give_up_hours=1 / 3600,  # a second after the approval
    ) as processor:
        approved = approval(payment_intent())
        await processor.publish(approved)

        [alert] = await processor.events("team_alert.raised", expected=1, about=approved.refund_id)
        assert alert["kind"] == "refund_outcome_unknown"
        assert await processor.refund_status(approved.refund_id) == "processing"

        # The provider comes back and proves it holds no refund, past the window: only now does the refund fail.
        port = urlsplit(processor.settings.stripe_api_base).port
        assert port is not None
        async with serving(create_sandbox(SandboxSettings(port=port)), port):
            await finished(processor, approved.refund_id, "failed")
        [failed] = await processor.events("refund.failed", expected=1, about=approved.refund_id)
        assert failed["failure_reason"] == "provider_unavailable"
        [alert] = await processor.events("provider.unavailable", expected=1, about=approved.refund_id)
        assert alert["attempts"] == processor.settings.provider_retry_budget
        assert alert["provider"] == "stripe"
        assert len(await processor.staged("team_alert.raised", about=approved.refund_id)) == 1, "alerted once"
        assert await processor.attempts(approved.refund_id) == ["failed"], "never a new key"


async def test_past_the_keys_lifetime_the_processor_reconciles_instead_of_retrying_the_old_key(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        provider_key_lifetime_seconds=1.0,
        provider_server_errors_before_reconcile=100,
        provider_retry_base_seconds=3.0,  # the retry (1.5 to 3 s later) comes after the key's lifetime
        provider_retry_max_seconds=3.0,
    ) as processor:
        intent = payment_intent("error500_after_create_")  # made, then a 500 that the key would replay forever
        approved = approval(intent)
        # Dated ahead (a producer's clock ahead of ours): attempt 1's key is then dated from its row, so the first
        # call is made however long the approval took to arrive on a loaded machine.
        ahead = Event.wrap(approved, source="refundflow/test", sequence=1).model_copy(
            update={"time": datetime.now(UTC) + timedelta(hours=1)}
        )
        await processor.deliver_again(ahead)

        await finished(processor, approved.refund_id, "succeeded")
        assert len(await processor.provider_refunds(intent)) == 1
        assert await processor.attempts(approved.refund_id) == ["succeeded"], "attempt 1's key made the refund"
        calls = await processor.db.fetchval(
            "SELECT provider_calls FROM refunds WHERE refund_id = $1", approved.refund_id
        )
        assert calls == 1, "one failed call, then reconciliation: the expired key was never used again"


async def test_a_new_key_is_dated_from_its_first_possible_use_so_a_retry_later_than_the_lifetime_still_uses_it(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """An approval older than the key's lifetime is reconciled first; the provider holds no refund, so attempt 2
    takes a new key, due after a backoff longer than that lifetime. A key cannot have been sent before it was due:
    it is called with, not reconciled as expired again and again (the CI run that stalled on main)."""
    async with running_processor(
        database_url,
        kafka_bootstrap,
        topic_prefix,
        provider_key_lifetime_seconds=1.5,
        provider_retry_base_seconds=4.0,  # attempt 2 falls due 2 to 4 s after attempt 1: later than the lifetime
        provider_retry_max_seconds=4.0,
    ) as processor:
        intent = payment_intent()
        approved = approval(intent)
        made_long_ago = Event.wrap(approved, source="refundflow/test", sequence=1).model_copy(
            update={"time": datetime.now(UTC) - timedelta(hours=1)}
        )
        await processor.deliver_again(made_long_ago)

        await finished(processor, approved.refund_id, "succeeded")
        assert len(await processor.provider_refunds(intent)) == 1
        assert await processor.attempts(approved.refund_id) == ["abandoned", "succeeded"]


async def test_an_approval_read_after_its_payments_erasure_keeps_nothing_of_the_customer(
    processor: ProcessorUnderTest,
) -> None:
    """Events of one payment come on several topics: an approval may be read after the payment's customer.erased.
    Its refund is recorded, and its outcome published, with neither the address nor the note to the customer."""
    intent = payment_intent()
    approved = approval(intent).model_copy(update={"note_to_customer": "Sorry Ada, refunded in full."})
    erased = CustomerErased(merchant_id=approved.merchant_id, payment_id=approved.payment_id, erasure_id="era_test")
    await _handled(processor, await processor.publish(erased))
    await processor.publish(approved)

    await finished(processor, approved.refund_id, "succeeded")
    kept = await processor.db.fetchrow(
        "SELECT customer_email, to_customer::text AS told FROM refunds WHERE refund_id = $1", approved.refund_id
    )
    assert kept is not None and kept["customer_email"] == "" and "Sorry Ada" not in kept["told"]
    [succeeded] = await processor.events("refund.succeeded", expected=1, about=approved.refund_id)
    assert succeeded["customer_email"] == "" and not succeeded.get("note_to_customer"), succeeded


async def test_a_cancel_read_after_its_payments_erasure_keeps_nothing_of_the_customer(
    processor: ProcessorUnderTest,
) -> None:
    subscription_id = f"sub_{payment_intent()}"
    cancel = SubscriptionCancelRequested(
        payment_id=f"pay_{subscription_id}",
        merchant_id="mer_test",
        subscription_id=subscription_id,
        at_period_end=False,
        requested_by="api_key:key_test",
        customer_email="ada@example.com",
        note_to_customer="Sorry Ada, cancelled.",
    )
    erased = CustomerErased(merchant_id=cancel.merchant_id, payment_id=cancel.payment_id, erasure_id="era_test")
    await _handled(processor, await processor.publish(erased))
    await publish_with_its_payment(processor, cancel)

    [canceled] = await processor.events("subscription.canceled", expected=1, about=subscription_id)
    assert not canceled.get("customer_email") and not canceled.get("note_to_customer"), canceled
    told = await processor.db.fetchval(
        "SELECT to_customer::text FROM subscription_cancels WHERE subscription_id = $1", subscription_id
    )
    assert "ada@example.com" not in told and "Sorry Ada" not in told
