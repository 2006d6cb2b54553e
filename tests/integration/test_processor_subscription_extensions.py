"""Goodwill extensions move the subscription's period end at the provider (Stripe's way: a trial until the new end,
with no proration), as durably as cancels: retried through provider trouble, alerted when refused, cumulative."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from refundflow_processor import subscription_extension_repository as extensions
from refundflow_processor.records import SubscriptionExtension
from refundflow_processor.subscription_extensions import GRANT_RECORDS_KEPT
from refundflow_shared.events import PortalLink, SubscriptionCancelRequested, SubscriptionExtensionGranted
from tests.conftest import create_database
from tests.support.probe_service import eventually
from tests.support.processor_harness import (
    PATIENT_CLIENT,
    ProcessorUnderTest,
    approval,
    payment_intent,
    publish_with_its_payment,
    running_processor,
    send_event,
    subscription_paid,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def processor(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[ProcessorUnderTest]:
    # The provider fails each change of a sub_flaky_ subscription more often than a consumer retries in place.
    # The tests count the provider's 500s: a slow answer must not count as one more failure.
    async with running_processor(
        await create_database(postgres_url),
        kafka_bootstrap,
        f"t{uuid.uuid4().hex[:8]}.",
        sandbox={"flaky_failures": 4},
        **PATIENT_CLIENT,
    ) as running:
        yield running


def grant(
    subscription_id: str, days: int, payment_id: str | None = None, refund_id: str | None = None
) -> SubscriptionExtensionGranted:
    return SubscriptionExtensionGranted(
        payment_id=payment_id or f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id="mer_extend",
        subscription_id=subscription_id,
        days=days,
        refund_id=refund_id or f"ref_{uuid.uuid4().hex[:8]}",
        granted_by="user:usr_1",
    )


async def provider_subscription(processor: ProcessorUnderTest, subscription_id: str) -> dict[str, Any]:
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    subscription: dict[str, Any] = (await client.v1.subscriptions.retrieve_async(subscription_id)).to_dict()
    return subscription


async def extended(processor: ProcessorUnderTest, subscription_id: str, count: int = 1) -> list[dict[str, Any]]:
    async def published() -> bool:
        return len(await processor.staged("subscription.extended", about=subscription_id)) >= count

    await eventually(published, timeout=60)
    return await processor.staged("subscription.extended", about=subscription_id)


async def test_an_extension_moves_the_period_end_at_the_provider_and_announces_the_new_end(
    processor: ProcessorUnderTest,
) -> None:
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    period_end = (await provider_subscription(processor, subscription_id))["items"]["data"][0]["current_period_end"]
    granted = grant(subscription_id, 7)
    await publish_with_its_payment(processor, granted)

    [announced] = await extended(processor, subscription_id)
    new_end = datetime.fromtimestamp(period_end, UTC) + timedelta(days=7)
    assert datetime.fromisoformat(announced["current_period_end"]) == new_end
    assert (announced["days"], announced["refund_id"], announced["payment_id"]) == (
        7,
        granted.refund_id,
        granted.payment_id,
    )
    at_provider = await provider_subscription(processor, subscription_id)
    assert (at_provider["status"], at_provider["trial_end"]) == ("trialing", int(new_end.timestamp()))
    assert at_provider["items"]["data"][0]["current_period_end"] == int(new_end.timestamp())


async def test_two_extensions_of_one_subscription_add_up(processor: ProcessorUnderTest) -> None:
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    period_end = (await provider_subscription(processor, subscription_id))["current_period_end"]
    await publish_with_its_payment(processor, grant(subscription_id, 3))
    await publish_with_its_payment(processor, grant(subscription_id, 4))

    announced = await extended(processor, subscription_id, 2)
    ends = sorted(datetime.fromisoformat(a["current_period_end"]) for a in announced)
    start = datetime.fromtimestamp(period_end, UTC)
    assert [e - start for e in ends] in ([timedelta(days=3), timedelta(days=7)], [timedelta(days=4), timedelta(days=7)])
    assert (await provider_subscription(processor, subscription_id))["trial_end"] == int(ends[-1].timestamp())


async def test_a_grant_read_again_after_a_restore_extends_the_subscription_once(processor: ProcessorUnderTest) -> None:
    """A restore of the processor's database to before a grant, then ``consumer rewind``: the grant is read again
    with no record of it here. The subscription at the provider carries the grant, written in the change itself:
    it is done, and its days are not added again."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    period_end = datetime.fromtimestamp(
        (await provider_subscription(processor, subscription_id))["current_period_end"], UTC
    )
    event = await publish_with_its_payment(processor, grant(subscription_id, 7))
    await extended(processor, subscription_id)
    once = period_end + timedelta(days=7)

    await processor.db.execute("DELETE FROM subscription_extensions WHERE extension_id = $1", str(event.id))
    await processor.db.execute("DELETE FROM inbox WHERE event_id = $1", event.id)
    await processor.db.execute(
        "DELETE FROM outbox WHERE event_type = 'subscription.extended'"
        " AND convert_from(payload, 'UTF8')::jsonb ->> 'subscription_id' = $1",
        subscription_id,
    )
    await send_event(processor.settings.kafka_bootstrap_servers, processor.settings.topic_prefix, event)

    [announced] = await extended(processor, subscription_id)
    assert datetime.fromisoformat(announced["current_period_end"]) == once
    at_provider = await provider_subscription(processor, subscription_id)
    assert at_provider["trial_end"] == int(once.timestamp())
    assert at_provider.get("metadata") == {f"rf_ext_{event.id.hex}": str(int(once.timestamp()))}
    state = await processor.db.fetchval(
        "SELECT state FROM subscription_extensions WHERE extension_id = $1", str(event.id)
    )
    assert state == "succeeded"


async def test_the_subscription_keeps_the_latest_grants_records_and_the_merchants_own_metadata(
    processor: ProcessorUnderTest,
) -> None:
    """Stripe keeps at most 50 metadata keys: a long-lived subscription with many grants keeps the records of the
    latest ones only (what a restore can still read again), and never loses the merchant's keys."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    await client.v1.subscriptions.update_async(subscription_id, params={"metadata": {"crm_id": "c_42"}})
    before = await provider_subscription(processor, subscription_id)
    start = datetime.fromtimestamp(before["current_period_end"], UTC)
    grants = [
        await publish_with_its_payment(processor, grant(subscription_id, 1)) for _ in range(GRANT_RECORDS_KEPT + 2)
    ]

    await extended(processor, subscription_id, len(grants))
    at_provider = await provider_subscription(processor, subscription_id)
    assert at_provider["trial_end"] == int((start + timedelta(days=len(grants))).timestamp())
    kept = {key: value for key, value in at_provider["metadata"].items() if key.startswith("rf_ext_")}
    latest = sorted(int((start + timedelta(days=n)).timestamp()) for n in range(3, len(grants) + 1))
    assert sorted(int(value) for value in kept.values()) == latest
    assert at_provider["metadata"]["crm_id"] == "c_42"
    assert len(at_provider["metadata"]) == GRANT_RECORDS_KEPT + 1


async def test_grant_records_leave_room_for_the_merchants_own_metadata(processor: ProcessorUnderTest) -> None:
    """Stripe's 50 keys count the merchant's too: with 45 of theirs, the subscription keeps the records of the
    latest 5 grants, and every grant is made."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    merchants = {f"crm_field_{n}": "x" for n in range(45)}
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    await client.v1.subscriptions.update_async(subscription_id, params={"metadata": merchants})
    start = datetime.fromtimestamp((await provider_subscription(processor, subscription_id))["current_period_end"], UTC)
    grants = [await publish_with_its_payment(processor, grant(subscription_id, 1)) for _ in range(6)]

    await extended(processor, subscription_id, len(grants))
    at_provider = await provider_subscription(processor, subscription_id)
    assert at_provider["trial_end"] == int((start + timedelta(days=len(grants))).timestamp())
    kept = sorted(int(value) for key, value in at_provider["metadata"].items() if key.startswith("rf_ext_"))
    assert kept == [int((start + timedelta(days=n)).timestamp()) for n in range(2, len(grants) + 1)]
    assert {key: value for key, value in at_provider["metadata"].items() if not key.startswith("rf_ext_")} == merchants


async def test_a_subscription_with_no_room_for_a_grant_record_is_extended_without_one(
    processor: ProcessorUnderTest,
) -> None:
    """The merchant's own metadata takes all of Stripe's 50 keys: the grant is made all the same, unrecorded there
    (only this database knows it was made, as before grants were recorded), and the merchant's keys stay as they
    were."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    merchants = {f"crm_field_{n}": "x" for n in range(50)}
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    await client.v1.subscriptions.update_async(subscription_id, params={"metadata": merchants})
    start = datetime.fromtimestamp((await provider_subscription(processor, subscription_id))["current_period_end"], UTC)
    granted = grant(subscription_id, 7)
    await publish_with_its_payment(processor, granted)

    [announced] = await extended(processor, subscription_id)
    assert datetime.fromisoformat(announced["current_period_end"]) == start + timedelta(days=7)
    at_provider = await provider_subscription(processor, subscription_id)
    assert at_provider["trial_end"] == int((start + timedelta(days=7)).timestamp())
    assert at_provider["metadata"] == merchants
    assert await processor.staged("team_alert.raised", about=granted.payment_id) == []


async def test_a_grant_record_whose_value_is_no_date_is_removed_first_and_the_grant_made(
    processor: ProcessorUnderTest,
) -> None:
    """A record under our prefix whose value is a Unix time past the year 9999 (not ours: no grant ends there) is
    not a time to order the records by: reading it raised ValueError and the extension failed on every lease."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    junk = {f"rf_ext_junk{n}": "999999999999" for n in range(GRANT_RECORDS_KEPT)}
    await client.v1.subscriptions.update_async(subscription_id, params={"metadata": junk})
    start = datetime.fromtimestamp((await provider_subscription(processor, subscription_id))["current_period_end"], UTC)
    granted = await publish_with_its_payment(processor, grant(subscription_id, 2))

    [announced] = await extended(processor, subscription_id)
    assert datetime.fromisoformat(announced["current_period_end"]) == start + timedelta(days=2)
    at_provider = await provider_subscription(processor, subscription_id)
    assert at_provider["metadata"][f"rf_ext_{granted.id.hex}"] == str(int((start + timedelta(days=2)).timestamp()))
    assert len(at_provider["metadata"]) == GRANT_RECORDS_KEPT, "one junk record made room for the grant's"


async def test_an_extension_of_a_subscription_set_to_cancel_at_its_period_end_extends_its_last_period(
    processor: ProcessorUnderTest,
) -> None:
    """The subscription was set to end at its period's end (an API cancel, or a refund-only decision's grant
    beside one): no payment follows the days added, and the announcement says it is the last period."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    client = stripe.StripeClient("sk_test_check", base_addresses={"api": processor.sandbox_url})
    await client.v1.subscriptions.update_async(subscription_id, params={"cancel_at_period_end": True})
    start = datetime.fromtimestamp((await provider_subscription(processor, subscription_id))["current_period_end"], UTC)
    await publish_with_its_payment(processor, grant(subscription_id, 5))

    [announced] = await extended(processor, subscription_id)
    assert datetime.fromisoformat(announced["current_period_end"]) == start + timedelta(days=5)
    assert announced["last_period"] is True
    assert (await provider_subscription(processor, subscription_id))["cancel_at"] == int(
        (start + timedelta(days=5)).timestamp()
    )


async def test_an_extension_seen_late_waits_for_the_one_already_under_way(processor: ProcessorUnderTest) -> None:
    """Two consumers record two grants of one subscription; the one whose transaction began first may commit last.
    It then looks older than an extension already halfway (its new period end fixed, the change still failing),
    and must still wait for it: else it reads the old period end and one grant's days are lost."""
    subscription_id = f"sub_flaky_{uuid.uuid4().hex[:12]}"  # each change fails a few times first: a long halfway
    period_end = datetime.fromtimestamp(
        (await provider_subscription(processor, subscription_id))["current_period_end"], UTC
    )
    await publish_with_its_payment(processor, grant(subscription_id, 4))

    async def halfway() -> bool:
        until = await processor.db.fetchval(
            "SELECT until FROM subscription_extensions WHERE subscription_id = $1 AND state = 'scheduled'",
            subscription_id,
        )
        return until is not None

    await eventually(halfway, timeout=30, interval=0.02)
    late = SubscriptionExtension(str(uuid.uuid4()), "pay_late", "mer_extend", subscription_id, 3, None)
    async with processor.db.acquire() as conn, conn.transaction():
        await extensions.request_extension(conn, late)
        await conn.execute(  # as if its transaction had begun before the first grant's
            "UPDATE subscription_extensions SET created_at = created_at - interval '1 minute' WHERE extension_id = $1",
            late.extension_id,
        )

    announced = await extended(processor, subscription_id, 2)
    ends = sorted(datetime.fromisoformat(a["current_period_end"]) - period_end for a in announced)
    assert ends == [timedelta(days=4), timedelta(days=7)], "the late one starts from the end the first one left"


async def test_an_extension_the_provider_keeps_failing_is_retried_until_it_is_done(
    processor: ProcessorUnderTest,
) -> None:
    subscription_id = f"sub_flaky_{uuid.uuid4().hex[:12]}"
    await publish_with_its_payment(processor, grant(subscription_id, 5))

    [announced] = await extended(processor, subscription_id)
    assert announced["days"] == 5
    tries = await processor.db.fetchval(
        "SELECT tries FROM subscription_extensions WHERE subscription_id = $1", subscription_id
    )
    assert tries == 4, "each 500 was retried from the durable schedule, each time under a new key"


async def test_a_cancel_only_with_goodwill_days_tells_the_access_end_the_extension_made(
    processor: ProcessorUnderTest,
) -> None:
    """Cancel only, with days of goodwill: the customer's email names the access end from subscription.canceled, so
    the cancel waits for the decision's extension, even one the processor hears of after the cancel."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    period_end = datetime.fromtimestamp(
        (await provider_subscription(processor, subscription_id))["current_period_end"], UTC
    )
    payment_id, refund_id = f"pay_{uuid.uuid4().hex[:10]}", f"ref_{uuid.uuid4().hex[:8]}"
    cancel = SubscriptionCancelRequested(
        payment_id=payment_id,
        merchant_id="mer_extend",
        subscription_id=subscription_id,
        at_period_end=True,
        refund_id=refund_id,
        after_extension=True,  # as intake asks it, with the grant, in one decision
        requested_by="user:usr_1",
    )
    await publish_with_its_payment(processor, cancel)

    async def cancel_recorded() -> bool:
        found = "SELECT 1 FROM subscription_cancels WHERE subscription_id = $1"
        return await processor.db.fetchval(found, subscription_id) is not None

    await eventually(cancel_recorded, timeout=30, interval=0.02)
    await processor.publish(grant(subscription_id, 7, payment_id, refund_id))

    [cancelled] = await processor.events("subscription.canceled", expected=1, about=subscription_id)
    access_end = period_end + timedelta(days=7)
    assert datetime.fromisoformat(cancelled["ends_at"]) == access_end, "the access end after the extension"
    assert cancelled["after_extension"] is True, "the customer hears of the extension first"
    assert (await provider_subscription(processor, subscription_id))["cancel_at"] == int(access_end.timestamp())


async def test_a_cancel_whose_extension_never_comes_goes_ahead_within_minutes(processor: ProcessorUnderTest) -> None:
    """The grant was dead-lettered (or the provider keeps failing it): the cancel waits for it only minutes, not
    until a renewal could bill the customer it was meant to stop billing."""
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    cancel = SubscriptionCancelRequested(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id="mer_extend",
        subscription_id=subscription_id,
        at_period_end=True,
        refund_id=f"ref_{uuid.uuid4().hex[:8]}",
        after_extension=True,
        requested_by="user:usr_1",
    )
    await publish_with_its_payment(processor, cancel)

    async def waiting() -> bool:
        found = "SELECT 1 FROM subscription_cancels WHERE subscription_id = $1 AND state = 'scheduled'"
        return await processor.db.fetchval(found, subscription_id) is not None

    await eventually(waiting, timeout=30, interval=0.02)
    await processor.db.execute(
        "UPDATE subscription_cancels SET created_at = created_at - interval '11 minutes' WHERE subscription_id = $1",
        subscription_id,
    )

    [cancelled] = await processor.events("subscription.canceled", expected=1, about=subscription_id)
    assert cancelled["at_period_end"] is True


@pytest.mark.parametrize("why", ["missing", "canceled"])
async def test_an_extension_the_provider_refuses_alerts_the_merchants_team(
    processor: ProcessorUnderTest, why: str
) -> None:
    subscription_id = f"sub_{'missing_' if why == 'missing' else ''}{uuid.uuid4().hex[:12]}"
    payment_id = f"pay_{uuid.uuid4().hex[:10]}"
    await processor.publish(subscription_paid("mer_extend", payment_id, subscription_id))
    if why == "canceled":
        cancel = SubscriptionCancelRequested(
            payment_id=payment_id,
            merchant_id="mer_extend",
            subscription_id=subscription_id,
            at_period_end=False,
            requested_by="user:usr_1",
        )
        await processor.publish(cancel)

        async def canceled() -> bool:
            return bool(await processor.staged("subscription.canceled", about=subscription_id))

        await eventually(canceled, timeout=30)
    await processor.publish(grant(subscription_id, 3, payment_id))

    async def alerted() -> bool:
        return bool(await processor.staged("team_alert.raised", about=payment_id))

    await eventually(alerted, timeout=30)
    [alert] = await processor.staged("team_alert.raised", about=payment_id)
    assert alert["kind"] == "subscription_extension_failed"
    assert alert["details"]["subscription_id"] == subscription_id
    assert await processor.staged("subscription.extended", about=subscription_id) == []
    # Intake hears it too (its timeline, the payment's state) and merchants' webhooks: only the team was told.
    [failed] = await processor.staged("subscription.extension_failed", about=subscription_id)
    assert (failed["payment_id"], failed["days"], failed["merchant_id"]) == (payment_id, 3, "mer_extend")
    assert failed["reason"]


async def test_every_outcome_carries_what_the_customers_email_needs_from_the_decision(
    processor: ProcessorUnderTest,
) -> None:
    """Events of one payment reach the notifier in any order across topics: each outcome carries its own words."""
    link = PortalLink(sealed_url="v2.k0.sealed-for-the-notifier", expires_at=datetime(2026, 12, 3, tzinfo=UTC))
    told = {"merchant_name": "Acme Software", "portal_link": link}
    approved = approval(payment_intent()).model_copy(update={**told, "process_time": "3 business days"})
    subscription_id = f"sub_{uuid.uuid4().hex[:12]}"
    cancel = SubscriptionCancelRequested(
        payment_id=f"pay_{uuid.uuid4().hex[:10]}",
        merchant_id="mer_extend",
        subscription_id=subscription_id,
        at_period_end=True,
        refund_id="ref_cancel_only",
        requested_by="user:usr_1",
        customer_email="grace@example.com",
        note_to_customer="It will not renew.",
        **told,
    )
    extend = grant(f"sub_{uuid.uuid4().hex[:12]}", 3).model_copy(update={**told, "customer_email": "ada@example.com"})
    await processor.publish(approved)
    for request in (cancel, extend):
        await publish_with_its_payment(processor, request)

    [refunded] = await processor.events("refund.succeeded", expected=1, about=approved.refund_id)
    assert (refunded["merchant_name"], refunded["process_time"]) == ("Acme Software", "3 business days")
    assert refunded["portal_link"]["sealed_url"] == link.sealed_url
    [cancelled] = await processor.events("subscription.canceled", expected=1, about=subscription_id)
    assert (cancelled["customer_email"], cancelled["note_to_customer"]) == ("grace@example.com", "It will not renew.")
    [more] = await extended(processor, extend.subscription_id)
    assert (more["customer_email"], more["portal_link"]["sealed_url"]) == ("ada@example.com", link.sealed_url)
