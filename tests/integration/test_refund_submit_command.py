"""The refund.submit command topic: requests from other platform services, refusals answered and parked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
import structlog
from aiokafka.errors import KafkaTimeoutError
from structlog.testing import capture_logs

from refundflow_intake.api.schemas import RefundCreate
from refundflow_intake.app import MIGRATIONS
from refundflow_intake.awaited_events import AwaitingEvents, Awaits, payment_registered
from refundflow_intake.idempotency import fingerprint
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import Event, PaymentSucceeded, Product, RefundSubmit, dlq_topic, topic_for
from refundflow_shared.migrations_runner import apply_migrations
from refundflow_shared.service_runtime import ServiceRuntime
from tests.conftest import create_database
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.kafka_reader import dead_letter_of, headers_of, read_topic
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
REJECTED = "refund.submit_rejected"


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


def billing_payment(merchant_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=f"pay_billing_{uuid.uuid4().hex}",
        merchant_id=merchant_id,
        customer_email="grace@example.com",
        customer_name="Grace Hopper",
        amount=1_500,
        currency="EUR",
        provider_payment_id=f"pi_{uuid.uuid4().hex}",
        paid_at=datetime(2026, 11, 1, tzinfo=UTC),
        product=Product(id="prod_x", name="Thing", kind="one_time", category="software"),
    )


async def handled(intake: IntakeUnderTest, event: Event) -> None:
    """Wait until intake's inbox recorded ``event``."""

    async def recorded() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id))

    await eventually(recorded, timeout=30)


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


async def test_api_idempotency_keys_and_command_keys_never_collide(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    api_first, command_first = await intake.payment(merchant), await intake.payment(merchant)

    async def ask(payment: dict[str, Any], key: str) -> None:
        body = {"payment_id": payment["id"], "reason": "duplicate", "amount": 500}
        asked = await intake.client.post("/v1/refunds", headers={**merchant, "Idempotency-Key": key}, json=body)
        assert asked.status_code == 201, asked.text

    async def submit(payment: dict[str, Any], key: str) -> None:
        await intake.publish(command(payment, merchant_id, idempotency_key=key, amount=700))

        async def handled() -> bool:
            made = "SELECT count(*) FROM refunds WHERE payment_id = $1 AND channel = 'command'"
            return bool(await intake.db.fetchval(made, payment["id"]) or await intake.staged(REJECTED, payment["id"]))

        await eventually(handled, timeout=30)

    # A merchant's key spelled as the platform's command key, and the other way round: each has its own refund.
    await ask(api_first, "refund.submit:order-42")
    await submit(api_first, "order-42")
    await submit(command_first, "order-43")
    await ask(command_first, "refund.submit:order-43")

    for payment in (api_first, command_first):
        listed = await intake.client.get("/v1/refunds", headers=merchant, params={"payment_id": payment["id"]})
        assert sorted((r["amount"], r["channel"]) for r in listed.json()["data"]) == [(500, "api"), (700, "command")]
        assert await intake.staged(REJECTED, payment["id"]) == []


async def test_keys_kept_in_one_namespace_before_are_each_their_channels_after_the_upgrade(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    dsn = await create_database(postgres_url)
    before = tmp_path / "migrations"
    before.mkdir()
    for path in MIGRATIONS.glob("*.sql"):
        if path.name < "0620":  # 0620_idempotency_keys_by_channel.sql
            shutil.copy(path, before / path.name)
    await apply_migrations(dsn, "intake", before)
    resent = command({"id": "pay_by_command"}, "mer_1", idempotency_key="order-7", amount=700)
    api_body = RefundCreate.model_validate({"payment_id": "pay_by_api", "reason": "duplicate", "amount": 500})
    # (payment, refund, channel, amount, the key as it was kept, what was sent)
    kept = [
        ("pay_by_command", "ref_by_command", "command", 700, "refund.submit:order-7", resent.model_dump(mode="json")),
        ("pay_by_api", "ref_by_api", "api", 500, "refund.submit:order-8", api_body.model_dump(mode="json")),
    ]
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    try:
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('mer_1', 'Acme')")
        await conn.execute(
            "INSERT INTO api_keys (id, merchant_id, key_hash) VALUES ('key_1', 'mer_1', $1)",
            hashlib.sha256(b"rfk_old").digest(),
        )
        for payment_id, refund_id, channel, amount, key, request in kept:
            await conn.execute(
                "INSERT INTO payments (id, merchant_id, customer_email, amount, currency, provider_payment_id,"
                " paid_at, product_id, product_name, product_kind)"
                " VALUES ($1, 'mer_1', 'ada@example.com', 10000, 'EUR', $1, now(), 'p', 'P', 'one_time')",
                payment_id,
            )
            await conn.execute(
                "INSERT INTO refunds (id, merchant_id, payment_id, amount, requested_amount, currency, reason, status,"
                " channel) VALUES ($1, 'mer_1', $2, $3, $3, 'EUR', 'duplicate', 'pending', $4)",
                refund_id,
                payment_id,
                amount,
                channel,
            )
            await conn.execute(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, refund_id) VALUES ('mer_1', $1, $2, $3)",
                key,
                fingerprint(request),
                refund_id,
            )
    finally:
        await conn.close()

    async with running_intake(postgres_url, kafka_bootstrap, database_url=dsn) as intake:
        # The command sent again is its first one's replay; the API's key stays the API's.
        await intake.publish(resent)
        await intake.publish(command({"id": "pay_by_api"}, "mer_1", idempotency_key="order-8", amount=300))
        retried = await intake.client.post(
            "/v1/refunds",
            headers={"Authorization": "Bearer rfk_old", "Idempotency-Key": "refund.submit:order-8"},
            json=api_body.model_dump(mode="json", exclude_none=True),
        )
        assert (retried.status_code, retried.json()["id"]) == (201, "ref_by_api"), retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"

        async def handled_both() -> bool:
            return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_type = 'refund.submit'") == 2)

        await eventually(handled_both, timeout=30)
        refunds = await intake.db.fetch("SELECT payment_id, amount, channel FROM refunds ORDER BY payment_id, amount")
        assert [tuple(r) for r in refunds] == [
            ("pay_by_api", 300, "command"),
            ("pay_by_api", 500, "api"),
            ("pay_by_command", 700, "command"),
        ]
        assert await intake.db.fetchval("SELECT count(*) FROM outbox WHERE event_type = $1", REJECTED) == 0


async def test_a_command_sent_just_ahead_of_its_payment_makes_its_refund(intake: IntakeUnderTest) -> None:
    """Billing's payment.succeeded travels on another topic, with the same partition number: a command read first
    waited in its lane for the payment, which that wait kept from being read, and was refused payment_not_found."""
    merchant = await intake.merchant()
    paid = billing_payment(await intake.merchant_id(merchant))
    submit = command({"id": paid.payment_id}, paid.merchant_id)
    sent = await intake.publish(submit, source="refundflow/support-desk")
    await asyncio.sleep(0.5)
    await intake.publish(paid)

    async def settled() -> bool:
        made = "SELECT count(*) FROM refunds WHERE payment_id = $1"
        return bool(await intake.db.fetchval(made, paid.payment_id) or await intake.staged(REJECTED, paid.payment_id))

    await eventually(settled, timeout=30)
    refunds = await intake.db.fetch("SELECT amount, channel FROM refunds WHERE payment_id = $1", paid.payment_id)
    assert [tuple(r) for r in refunds] == [(1_000, "command")]
    assert await intake.staged(REJECTED, paid.payment_id) == []
    assert await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", sent.id) == 0


async def test_a_command_asked_in_time_is_judged_when_it_was_sent_not_when_its_payment_came(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    """A command read before its payment waits for billing's payment.succeeded; it was judged against the refund
    window when the payment came, so one sent 30 s before the window closed and applied a minute later was flagged
    outside_refund_window and lost its auto-approval, though the customer asked in time."""
    async with running_intake(postgres_url, kafka_bootstrap, awaited_event_wait_seconds=600.0) as intake:
        merchant = await intake.merchant()
        rule = {"max_amount": {"amount": 2_000, "currency": "EUR"}, "reasons": ["technical_issue"]}
        assert (await intake.client.put("/v1/refund-policy", headers=merchant, json={"auto_approve": rule})).is_success
        paid = billing_payment(await intake.merchant_id(merchant)).model_copy(
            update={"paid_at": intake.clock() - timedelta(days=14) + timedelta(seconds=30)}
        )
        sent = await intake.publish(command({"id": paid.payment_id}, paid.merchant_id), source="refundflow/support")

        async def parked() -> bool:
            return bool(await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", sent.id))

        await eventually(parked, timeout=30)
        intake.clock.advance(timedelta(seconds=60))  # the window closed while it waited
        await intake.publish(paid)

        async def made() -> bool:
            return bool(await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", paid.payment_id))

        await eventually(made, timeout=30)
        refund = await intake.db.fetchrow(
            "SELECT status, flags, (judged_by->>'asked_at')::timestamptz AS asked_at FROM refunds"
            " WHERE payment_id = $1",
            paid.payment_id,
        )
        assert (refund["status"], refund["flags"]) == ("processing", []), "approved at once"
        assert refund["asked_at"] == sent.time, "the time it was judged at is kept with it"


async def billings_id_for(intake: IntakeUnderTest, merchant: dict[str, str]) -> tuple[dict[str, Any], PaymentSucceeded]:
    """A payment registered through the API, and billing's payment.succeeded of it under billing's own id."""
    payment = await intake.payment(merchant)
    billing = billing_payment(await intake.merchant_id(merchant)).model_copy(
        update={"provider_payment_id": payment["provider_payment_id"], "amount": payment["amount"]}
    )
    return payment, billing


async def refunds_made(intake: IntakeUnderTest, payment: dict[str, Any], billing: PaymentSucceeded) -> list[Any]:
    async def settled() -> bool:
        made = "SELECT count(*) FROM refunds WHERE payment_id = $1"
        return bool(await intake.db.fetchval(made, payment["id"]) or await intake.staged(REJECTED, billing.payment_id))

    await eventually(settled, timeout=30)
    assert await intake.staged(REJECTED, billing.payment_id) == []
    rows = await intake.db.fetch("SELECT amount, channel FROM refunds WHERE payment_id = $1", payment["id"])
    return [tuple(r) for r in rows]


async def test_a_command_naming_billings_own_id_for_a_payment_makes_its_refund(intake: IntakeUnderTest) -> None:
    """Billing's id for a payment registered through the API is kept (its disputes name it so), but a command
    naming it was refused payment_not_found."""
    payment, billing = await billings_id_for(intake, await intake.merchant())
    await handled(intake, await intake.publish(billing))
    await intake.publish(command({"id": billing.payment_id}, billing.merchant_id), source="refundflow/support-desk")

    assert await refunds_made(intake, payment, billing) == [(1_000, "command")]


async def test_a_command_naming_billings_id_read_before_billings_payment_makes_its_refund(
    intake: IntakeUnderTest,
) -> None:
    payment, billing = await billings_id_for(intake, await intake.merchant())
    submit = command({"id": billing.payment_id}, billing.merchant_id)
    sent = await intake.publish(submit, source="refundflow/support-desk")

    async def parked() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", sent.id))

    await eventually(parked, timeout=30)
    await intake.publish(billing)

    assert await refunds_made(intake, payment, billing) == [(1_000, "command")]
    assert await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", sent.id) == 0


async def test_a_command_whose_payment_never_comes_is_refused_once_it_has_waited(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    submit = command({"id": f"pay_never_{uuid.uuid4().hex}"}, await intake.merchant_id(merchant))
    sent = await intake.publish(submit)
    await handled(intake, sent)
    assert await intake.staged(REJECTED, submit.payment_id) == []  # waiting for its payment, not refused

    async def answered() -> bool:
        return bool(await intake.staged(REJECTED, submit.payment_id))

    await eventually(answered, timeout=30)
    [answer] = await intake.staged(REJECTED, submit.payment_id)
    assert answer["code"] == "payment_not_found"
    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "payment_not_found"
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", submit.payment_id) == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"amount": 20_000}, "refund_exceeds_refundable"),
        ({"amount": 0}, "invalid_amount"),
        ({"reason": "bored"}, "invalid_reason"),
        ({"currency": "USD"}, "currency_mismatch"),
        ({"payment_id": "pay_unknown"}, "payment_not_found"),
        # Text PostgreSQL cannot store: answered, not a handler error at the database.
        ({"reason_details": "ticket \x00 42"}, "invalid_text"),
        ({"submitted_by": "support-desk\x00"}, "invalid_text"),
        ({"idempotency_key": "support-ticket-\x00"}, "invalid_text"),
    ],
)
async def test_a_refused_command_is_answered_and_parked_with_its_reason(
    intake: IntakeUnderTest, fields: dict[str, Any], code: str
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    submit = command(payment, await intake.merchant_id(merchant), **fields)

    async def answered() -> bool:
        return bool(await intake.staged("refund.submit_rejected", submit.payment_id))

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        sent = await intake.publish(submit)
        await eventually(answered, timeout=30)
    [answer] = await intake.staged("refund.submit_rejected", submit.payment_id)
    assert (answer["idempotency_key"], answer["code"]) == (submit.idempotency_key, code)
    refused = [line for line in logs if line["event"] == "refund_submit_refused" and line["event_id"] == str(sent.id)]
    assert refused and all(line["log_level"] == "warning" and line["code"] == code for line in refused)
    assert refused[0]["merchant_id"] == submit.merchant_id and refused[0]["payment_id"] == submit.payment_id
    assert answer["message"]
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", submit.payment_id) == 0

    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = [r for r in await read_topic(intake.settings.kafka_bootstrap_servers, dlq, expected=1, timeout=20)]
    mine = [headers_of(r) for r in parked if headers_of(r)["ce_id"] == str(sent.id)]
    assert [(h["dlq_reason"], h["dlq_consumer"]) for h in mine] == [(code, "intake")]


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"reason": "bored"}, "invalid_reason"), ({"payment_id": "pay_never_registered"}, "payment_not_found")],
)
async def test_a_refusal_parked_while_the_broker_does_not_answer_is_answered_and_parked_once_it_does(
    intake: IntakeUnderTest, fields: dict[str, Any], code: str
) -> None:
    """The refusal is parked from within the handler's transaction: a broker that times out then (no in-sync
    replica for a while, say) is waited out, as the database is. It was handled as a bug: dead-lettered as
    handler_error, its answer rolled back, the sender never told. An unknown payment is refused on the last try
    only (it may be on its way): that try, waited out, is still the last."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    submit = command(payment, await intake.merchant_id(merchant), **fields)
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
    assert answer["code"] == code
    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == code


async def test_a_key_reused_for_another_command_is_answered_however_long_the_key_looks_when_quoted(
    intake: IntakeUnderTest,
) -> None:
    """A key of 255 characters that print as 10 each (U+E0001, ``\\U000e0001``): the refusal quoted it, so its
    message was longer than an answer's 2000 characters, and the command was dead-lettered as a handler error
    with no answer."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    merchant_id = await intake.merchant_id(merchant)
    key = "\U000e0001" * 255
    first = await intake.publish(command(payment, merchant_id, idempotency_key=key))

    async def handled() -> bool:
        return bool(await intake.db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", first.id))

    await eventually(handled, timeout=30)
    sent = await intake.publish(command(payment, merchant_id, idempotency_key=key, amount=2_000))

    async def answered() -> bool:
        return bool(await intake.staged("refund.submit_rejected", payment["id"]))

    await eventually(answered, timeout=30)
    [answer] = await intake.staged("refund.submit_rejected", payment["id"])
    assert (answer["idempotency_key"], answer["code"]) == (key, "idempotency_key_reused")
    assert 0 < len(answer["message"]) <= 2000
    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "idempotency_key_reused"


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


async def test_an_amount_stripe_cannot_refund_exactly_is_answered_and_parked_as_one(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="KWD")
    submit = command(payment, await intake.merchant_id(merchant), amount=3_333, currency="KWD")  # 3.333 KWD
    sent = await intake.publish(submit)

    async def answered() -> bool:
        return bool(await intake.staged("refund.submit_rejected", submit.payment_id))

    await eventually(answered, timeout=30)
    [answer] = await intake.staged("refund.submit_rejected", submit.payment_id)
    assert answer["code"] == "amount_not_representable" and "KWD" in answer["message"]
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", submit.payment_id) == 0
    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, sent.id, timeout=30)
    assert parked["dlq_reason"] == "amount_not_representable"


async def test_events_parked_together_are_resumed_in_the_order_they_came(intake: IntakeUnderTest) -> None:
    """A batch parks its events in one transaction, so at one now(): ordered by that and then by their ids, which
    the sender chose, the second command of a payment could be applied first and take its one open request."""
    resumed: list[str] = []
    awaiting = AwaitingEvents(cast(EventConsumer, None), "unused.", timedelta(minutes=5), lambda: datetime.now(UTC))
    key = payment_registered("mer_unknown", f"pay_{uuid.uuid4().hex}")

    async def apply(conn: asyncpg.Connection, event: Event, waited: bool) -> None:
        assert isinstance(event.data, RefundSubmit)
        if not resumed:
            raise Awaits(key, "not yet")
        resumed.append(event.data.idempotency_key)

    awaiting.applies(RefundSubmit.event_type, apply)
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    ids = [uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"), uuid.UUID("00000000-0000-4000-8000-000000000000")]
    sent = [
        Event.wrap(command(payment, await intake.merchant_id(merchant), idempotency_key=name), source="t", sequence=1)
        for name in ("first", "second")
    ]
    async with intake.db.acquire() as conn, conn.transaction():
        for event, event_id in zip(sent, ids, strict=True):
            await awaiting.handle(conn, event.model_copy(update={"id": event_id}))
    resumed.append("ready")
    async with intake.db.acquire() as conn, conn.transaction():
        await awaiting.resume(conn, key)
    assert resumed == ["ready", "first", "second"]


async def test_a_parked_event_that_no_longer_decodes_fails_neither_its_payment_nor_the_deadline_job(
    intake: IntakeUnderTest,
) -> None:
    """A version that reads an older schema no more (a deploy while events waited) cannot decode what was parked:
    that failed the payment.succeeded it awaited (dead-lettered, the payment never registered) and, at its deadline,
    the job that settles what waited, again after every restart."""
    merchant = await intake.merchant()
    paid = billing_payment(await intake.merchant_id(merchant))
    stale = Event.wrap(command({"id": paid.payment_id}, paid.merchant_id), source="refundflow/support-desk", sequence=1)
    headers = {**stale.kafka_headers(), "ce_dataschema": "urn:refundflow:refund.submit:v99"}
    await intake.db.execute(
        "INSERT INTO awaiting_events (event_id, event_type, awaits, headers, data, deadline)"
        " VALUES ($1, 'refund.submit', $2, $3::jsonb, $4::jsonb, now() + interval '2 seconds')",
        stale.id,
        payment_registered(paid.merchant_id, paid.payment_id),
        json.dumps(headers),
        stale.kafka_value().decode(),
    )
    await handled(intake, await intake.publish(paid))
    assert await intake.db.fetchval("SELECT count(*) FROM payments WHERE id = $1", paid.payment_id) == 1

    dlq = dlq_topic(topic_for("refund.submit", intake.settings.topic_prefix))
    parked = await dead_letter_of(intake.settings.kafka_bootstrap_servers, dlq, stale.id, timeout=30)
    assert parked["dlq_reason"] == "unknown_schema_version"
    assert await intake.db.fetchval("SELECT count(*) FROM awaiting_events WHERE event_id = $1", stale.id) == 0
    # The job lives on: a command whose payment never comes is still refused at its deadline.
    later = command({"id": f"pay_never_{uuid.uuid4().hex}"}, paid.merchant_id)
    await intake.publish(later)

    async def answered() -> bool:
        return bool(await intake.staged(REJECTED, later.payment_id))

    await eventually(answered, timeout=30)
