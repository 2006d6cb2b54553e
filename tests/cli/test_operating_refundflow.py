"""An operator drives `refundflow` against a running Refundflow: one refund's story across the three services, a
poison message dead-lettered then replayed once after its cause is fixed, a parked outbox event retried, records
read from a topic whatever they hold, and a stopped consumer rewound and rebuilt without repeating an effect."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from refundflow_intake.portal import customer_requests
from refundflow_shared.events import (
    Event,
    PaymentSucceeded,
    Product,
    RefundSubmit,
    SubscriptionExtensionGranted,
    TeamAlertRaised,
    dlq_topic,
    topic_for,
)
from refundflow_shared.outbox import add_event
from tests.cli.refundflow_stack import REFUNDFLOW, RefundflowStack, refundflow_stack
from tests.support.probe_service import eventually
from tests.support.raw_records import RawRecord, produce, raw_headers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def stack(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[RefundflowStack]:
    async with refundflow_stack(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_refunds_story_spans_intake_the_processor_and_the_notifier_in_time_order(
    stack: RefundflowStack,
) -> None:
    merchant_id, auth = await stack.merchant()
    endpoint = await stack.api.post(
        "/v1/webhook-endpoints", headers=auth, json={"url": stack.http.url("story"), "events": ["refund.succeeded"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]

    async def notifier_knows_the_endpoint() -> bool:
        return bool(
            await stack.db.fetchval("SELECT count(*) FROM notifier.webhook_endpoints WHERE id = $1", endpoint_id)
        )

    await eventually(notifier_knows_the_endpoint)
    payment = await stack.payment(merchant_id)
    refund_id = await stack.request_refund(auth, payment["id"])
    await stack.approve(auth, refund_id)
    await stack.wait_for_status(refund_id, "succeeded")

    async def everyone_is_done() -> bool:
        sent = await stack.db.fetchval(
            "SELECT count(*) FROM notifier.messages WHERE refund_id = $1 AND status = 'pending'", refund_id
        )
        delivered = await stack.db.fetchval(
            "SELECT count(*) FROM notifier.webhook_deliveries WHERE endpoint_id = $1 AND status = 'succeeded'",
            endpoint_id,
        )
        return bool(sent == 0 and delivered == 1)

    await eventually(everyone_is_done)

    result = await stack.cli("refund", refund_id, "--json")
    assert result.exit_code == 0, result.stderr
    story = result.json()
    intake = story["intake"]
    assert intake["refund"]["status"] == "succeeded"
    assert [step["status"] for step in intake["timeline"]] == ["pending", "processing", "succeeded"]
    [attempt] = story["processor"]["attempts"]
    assert attempt["idempotency_key"] == f"refund_{refund_id}_1"
    assert attempt["state"] == "succeeded"
    [provider_refund] = await stack.provider_refunds(payment["provider_payment_id"])
    assert attempt["provider_refund_id"] == provider_refund["id"] == story["processor"]["refund"]["provider_refund_id"]
    emails = [m for m in story["notifier"]["messages"] if m["channel"] == "email"]
    assert emails and {m["recipient"] for m in emails} == {"a***@example.com"}
    assert {m["status"] for m in emails} == {"sent"}
    [delivery] = story["notifier"]["webhook_deliveries"]
    assert (delivery["endpoint_id"], delivery["status"], delivery["last_status_code"]) == (
        endpoint_id,
        "succeeded",
        200,
    )
    by_type = {e["event_type"]: e for e in story["events"]}
    assert by_type["refund.approved"]["published_by"] == "intake"
    assert set(by_type["refund.approved"]["handled_by"]) == {"processor", "notifier"}
    assert by_type["refund.succeeded"]["published_by"] == "processor"
    assert set(by_type["refund.succeeded"]["handled_by"]) == {"intake", "notifier"}
    moments = [datetime.fromisoformat(step["at"]) for step in story["story"]]
    assert moments == sorted(moments)
    services = [step["service"] for step in story["story"]]
    assert services.index("intake") < services.index("processor") < len(services) - 1
    assert "ada@example.com" not in result.stdout

    readable = await stack.cli("refund", refund_id)
    assert readable.exit_code == 0, readable.stderr
    assert f"refund_{refund_id}_1" in readable.stdout
    assert provider_refund["id"] in readable.stdout
    assert "ada@example.com" not in readable.stdout

    unknown = await stack.cli("refund", "ref_does_not_exist", "--json")
    assert unknown.exit_code == 4
    assert unknown.json()["error"]["code"] == "not_found"


def faulty_release(table: str, what: str, *, on: str = "INSERT") -> tuple[str, str]:
    """A faulty release that cannot write ``table`` (schema-qualified): every handler writing it fails. Returns the SQL
    that deploys it and the SQL that fixes it."""
    schema, name = table.split(".")
    function = f"{schema}.refuse_{name}"
    deploy = (
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN RAISE EXCEPTION '{what} are refused by a faulty release'; END $$;"
        f" CREATE TRIGGER refuse_{name} BEFORE {on} ON {table} FOR EACH ROW EXECUTE FUNCTION {function}();"
    )
    fix = f"DROP TRIGGER IF EXISTS refuse_{name} ON {table}; DROP FUNCTION IF EXISTS {function}()"
    return deploy, fix


# A faulty release: the processor cannot record any refund, so every refund.approved fails in its handler.
REFUSE_REFUNDS, FIX_RELEASE = faulty_release("processor.refunds", "refunds")


async def dead_letter_of(stack: RefundflowStack, topic: str, key: str) -> tuple[int, dict[str, Any]]:
    """`dlq list TOPIC`'s exit code and its entry for the key, once the consumer has dead-lettered it."""
    found: list[tuple[int, dict[str, Any]]] = []

    async def listed() -> bool:
        result = await stack.cli("dlq", "list", topic, "--json")
        found[:] = [(result.exit_code, e) for e in result.json()["dead_letters"] if e["key"] == key]
        return bool(found)

    await eventually(listed, interval=0.3)
    return found[0]


async def test_a_poison_message_is_listed_then_replayed_once_after_its_cause_is_fixed(stack: RefundflowStack) -> None:
    merchant_id, auth = await stack.merchant()
    payment = await stack.payment(merchant_id)
    await stack.db.execute(REFUSE_REFUNDS)
    try:
        refund_id = await stack.request_refund(auth, payment["id"])
        await stack.approve(auth, refund_id)
        exit_code, letter = await dead_letter_of(stack, "refund.approved", payment["id"])
    finally:
        await stack.db.execute(FIX_RELEASE)
    assert exit_code == 1, "a dead letter waiting for an operator is a problem found"
    assert (letter["reason"], letter["consumer"], letter["event_type"]) == (
        "handler_error",
        "processor",
        "refund.approved",
    )
    assert "refunds are refused by a faulty release" in letter["error"]
    assert letter["original_topic"] == topic_for("refund.approved", stack.prefix)
    assert letter["original_partition"] is not None and letter["original_offset"] is not None
    assert letter["failed_at"] and letter["replayed"] is None

    stuck = await stack.cli("stuck", "--older-than", "0s", "--json")
    assert stuck.exit_code == 1
    [processing] = [r for r in stuck.json()["processing"] if r["refund_id"] == refund_id]
    assert processing["latest_attempt"] is None, "the processor never recorded it"

    dry = await stack.cli("dlq", "replay", "refund.approved", "--all", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert dry.json()["counts"] == {"would_replay": 1}
    by_processor = ("--consumer", "processor", "--dry-run", "--json")
    mine = await stack.cli("dlq", "replay", "refund.approved", "--all", *by_processor)
    assert (mine.exit_code, mine.json()["counts"]) == (0, {"would_replay": 1}), mine.stderr
    on_topic = await stack.cli("tail", "refund.approved", "--key", payment["id"], "--from-beginning", "--json")
    assert len(on_topic.json_lines()) == 1, "a dry run publishes nothing"

    # Two operators replay at once: the message is published once.
    replays = await asyncio.gather(
        *(stack.run_refundflow("dlq", "replay", "refund.approved", "--all", "--json") for _ in range(2))
    )
    assert [r.exit_code for r in replays] == [0, 0], [r.stderr for r in replays]
    assert sorted(json.dumps(r.json()["counts"]) for r in replays) == [
        json.dumps({"already_replayed": 1}),
        json.dumps({"replayed": 1}),
    ]
    await stack.wait_for_status(refund_id, "succeeded")

    again = await stack.cli("dlq", "replay", "refund.approved", "--all", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["counts"] == {"already_replayed": 1}
    one = await stack.cli("dlq", "replay", "refund.approved", "--event-id", letter["event_id"], "--json")
    assert [r["outcome"] for r in one.json()["results"]] == ["already_replayed"]

    assert len(await stack.provider_refunds(payment["provider_payment_id"])) == 1
    attempts = await stack.db.fetchval("SELECT count(*) FROM processor.refund_attempts WHERE refund_id = $1", refund_id)
    assert attempts == 1
    records = (
        await stack.cli("tail", "refund.approved", "--key", payment["id"], "--from-beginning", "--json")
    ).json_lines()
    assert [r["event"]["id"] for r in records] == [letter["event_id"]] * 2, "the original and exactly one replay"
    listed = await stack.cli("dlq", "list", "refund.approved", "--json")
    assert listed.exit_code == 0 and listed.json()["waiting"] == 0
    [entry] = [e for e in listed.json()["dead_letters"] if e["key"] == payment["id"]]
    assert entry["replayed"]["offset"] == records[1]["offset"]
    after = await stack.cli("stuck", "--older-than", "0s", "--json")
    assert refund_id not in [r["refund_id"] for r in after.json()["processing"]]


async def test_a_refused_command_is_final_its_replay_is_declined_and_its_sender_sends_it_again(
    stack: RefundflowStack,
) -> None:
    """A refund.submit for a payment intake does not know yet is refused, answered and parked. The refusal is final:
    the sender was told, and may have acted on it. `dlq replay` declines the letter (it was a silent no-op that said
    replayed), `dlq list` shows it final and not waiting, a redelivery once the payment came is skipped, and the
    command sent again makes the request."""
    merchant_id, _ = await stack.merchant()
    payment_id = f"pay_late_{uuid.uuid4().hex[:8]}"
    submit = Event.wrap(
        RefundSubmit(
            payment_id=payment_id,
            merchant_id=merchant_id,
            idempotency_key="support-ticket-9",
            reason="technical_issue",
            amount=1_000,
            submitted_by="support-desk",
        ),
        source="refundflow/support-desk",
        sequence=1,
    )

    def command_record(command: Event) -> RawRecord:
        topic = topic_for("refund.submit", stack.prefix)
        return RawRecord(topic, payment_id.encode(), raw_headers(command), command.kafka_value())

    await produce(stack.kafka, [command_record(submit)])

    async def answers() -> list[str]:
        staged = "SELECT payload FROM intake.outbox WHERE event_type = 'refund.submit_rejected' AND partition_key = $1"
        return [
            json.loads(bytes(row["payload"]))["code"]
            for row in await stack.db.fetch(staged + " ORDER BY id", payment_id)
        ]

    async def letters_of_the_command() -> list[dict[str, Any]]:
        listed = await stack.cli("dlq", "list", "refund.submit", "--json")
        return [e for e in listed.json()["dead_letters"] if e["event_id"] == str(submit.id)]

    async def parked() -> bool:
        return len(await letters_of_the_command()) == len(await answers()) == 1

    await eventually(parked, interval=0.3)
    assert await answers() == ["payment_not_found"]

    # Final, so no operator has anything to do: `dlq list` exited 1 for as long as the letter was kept (30 days).
    listed = await stack.cli("dlq", "list", "refund.submit", "--json")
    [entry] = [e for e in listed.json()["dead_letters"] if e["event_id"] == str(submit.id)]
    assert (listed.exit_code, listed.json()["waiting"]) == (0, 0), listed.stdout
    assert entry["replayed"] is None and "answered to its sender" in entry["final"]
    shown = await stack.cli("dlq", "list", "refund.submit")
    assert shown.exit_code == 0 and "final: refused" in shown.stdout, shown.stdout

    declined = await stack.cli("dlq", "replay", "refund.submit", "--event-id", str(submit.id), "--json")
    assert declined.exit_code == 1, declined.stderr
    [mine] = declined.json()["results"]
    assert mine["outcome"] == "not_replayable"
    assert "answered to its sender, who sends it again" in mine["detail"]
    everything = await stack.cli("dlq", "replay", "refund.submit", "--all", "--json")
    assert everything.exit_code == 0, everything.stdout
    [mine] = [r for r in everything.json()["results"] if r["event_id"] == str(submit.id)]
    assert mine["outcome"] == "final"
    assert "answered to its sender, who sends it again" in mine["detail"]

    billing = Event.wrap(
        PaymentSucceeded(
            payment_id=payment_id,
            merchant_id=merchant_id,
            amount=4_999,
            currency="EUR",
            customer_email="ada@example.com",
            provider_payment_id=f"pi_cli_{uuid.uuid4().hex[:12]}",
            paid_at=datetime.now(UTC) - timedelta(days=1),
            product=Product(id="prod_pro", name="Pro plan", kind="one_time"),
        ),
        source="refundflow/billing",
        sequence=1,
    )
    topic = topic_for("payment.succeeded", stack.prefix)
    await produce(stack.kafka, [RawRecord(topic, payment_id.encode(), raw_headers(billing), billing.kafka_value())])

    async def registered() -> bool:
        return bool(await stack.db.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment_id))

    await eventually(registered)
    # Delivered once more (a rebalance, a crash before the offset commit), then the sender's new command behind it.
    sent_again = Event.wrap(
        submit.data.model_copy(update={"idempotency_key": "support-ticket-10", "amount": 2_000}),
        source="refundflow/support-desk",
        sequence=2,
    )
    await produce(stack.kafka, [command_record(submit), command_record(sent_again)])

    async def requested() -> bool:
        return bool(await stack.db.fetchval("SELECT count(*) FROM intake.refunds WHERE payment_id = $1", payment_id))

    await eventually(requested)
    refunds = await stack.db.fetch("SELECT amount, channel FROM intake.refunds WHERE payment_id = $1", payment_id)
    assert [(r["amount"], r["channel"]) for r in refunds] == [(2_000, "command")], "the redelivery stayed refused"
    assert await answers() == ["payment_not_found"]
    assert len(await letters_of_the_command()) == 1


REFUSE_REQUESTS, FIX_INTAKE_RELEASE = faulty_release("intake.refunds", "requests")


async def test_a_failed_command_replayed_and_then_refused_is_parked_saying_it_was_a_replay(
    stack: RefundflowStack,
) -> None:
    """A refund.submit that failed (a faulty release) is replayed once that is fixed; meanwhile its sender's other
    command made the payment's request, so the replay is refused. Its dead letter says which letter it replays, as a
    replay that fails again does: intake parked the refusal with the event's own headers, without the marker."""
    merchant_id, _ = await stack.merchant()
    payment_id = (await stack.payment(merchant_id))["id"]
    topic = topic_for("refund.submit", stack.prefix)

    def command(key: str) -> Event:
        submit = RefundSubmit(
            payment_id=payment_id,
            merchant_id=merchant_id,
            idempotency_key=key,
            reason="technical_issue",
            amount=1_000,
            submitted_by="support-desk",
        )
        return Event.wrap(submit, source="refundflow/support-desk", sequence=1)

    failing, other = command("support-ticket-11"), command("support-ticket-12")
    await stack.db.execute(REFUSE_REQUESTS)
    try:
        await produce(stack.kafka, [RawRecord(topic, payment_id.encode(), raw_headers(failing), failing.kafka_value())])
        _, first = await dead_letter_of(stack, "refund.submit", payment_id)
    finally:
        await stack.db.execute(FIX_INTAKE_RELEASE)
    assert (first["event_id"], first["reason"], first["replay_of"]) == (str(failing.id), "handler_error", None)
    await produce(stack.kafka, [RawRecord(topic, payment_id.encode(), raw_headers(other), other.kafka_value())])

    async def requested() -> bool:
        return bool(await stack.db.fetchval("SELECT count(*) FROM intake.refunds WHERE payment_id = $1", payment_id))

    await eventually(requested)
    replayed = await stack.cli("dlq", "replay", "refund.submit", "--event-id", str(failing.id), "--json")
    assert replayed.exit_code == 0 and replayed.json()["counts"] == {"replayed": 1}, replayed.stderr

    found: list[dict[str, Any]] = []

    async def refused() -> bool:
        listed = (await stack.cli("dlq", "list", "refund.submit", "--json")).json()["dead_letters"]
        found[:] = [e for e in listed if e["event_id"] == str(failing.id) and e["reason"] == "open_request_exists"]
        return bool(found)

    await eventually(refused, interval=0.3)
    [again] = found
    parked_on = dlq_topic(topic)
    assert again["replay_of"] == f"{parked_on}/{first['partition']}/{first['offset']}"


# A faulty release: the notifier cannot store any merchant's settings, so every settings event fails in its handler.
REFUSE_SETTINGS, FIX_NOTIFIER_RELEASE = faulty_release("notifier.merchant_settings", "settings", on="INSERT OR UPDATE")


async def test_replaying_old_settings_from_the_dlq_leaves_the_newer_settings_the_notifier_holds(
    stack: RefundflowStack,
) -> None:
    """Settings announced while the notifier refused them wait in the DLQ; the merchant changes them again, and the
    notifier takes those. Replaying the old letters (as the upgrade runbook says) does not bring the old ones back."""
    merchant_id, auth = await stack.merchant()

    async def switch_portal(enabled: bool) -> None:
        async with stack.db.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL search_path TO intake")
            await customer_requests.set_portal_enabled(conn, merchant_id, enabled)

    async def configure(team_email: str) -> None:
        response = await stack.api.put("/v1/notification-settings", headers=auth, json={"team_email": team_email})
        assert response.status_code == 200, response.text

    async def held() -> tuple[str | None, bool] | None:
        row = await stack.db.fetchrow(
            "SELECT team_email, portal_enabled FROM notifier.merchant_settings WHERE merchant_id = $1", merchant_id
        )
        return (row["team_email"], row["portal_enabled"]) if row else None

    await stack.db.execute(REFUSE_SETTINGS)
    try:
        await switch_portal(False)
        await configure("a@example.com")

        async def both_parked() -> bool:
            listed = (await stack.cli("dlq", "list", "notification_settings.configured", "--json")).json()
            return len([e for e in listed["dead_letters"] if e["key"] == merchant_id]) == 2

        await eventually(both_parked, interval=0.3)
    finally:
        await stack.db.execute(FIX_NOTIFIER_RELEASE)
    await switch_portal(True)
    await configure("b@example.com")
    await eventually(lambda: _equals(held(), ("b@example.com", True)), interval=0.2)

    replayed = await stack.cli("dlq", "replay", "notification_settings.configured", "--all", "--json")
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.json()["counts"] == {"replayed": 2}

    async def replays_handled() -> bool:
        handled = await stack.db.fetchval(
            "SELECT count(DISTINCT i.event_id) FROM notifier.inbox i JOIN intake.outbox o ON o.event_id = i.event_id"
            " WHERE o.partition_key = $1 AND o.event_type = 'notification_settings.configured'",
            merchant_id,
        )
        return bool(handled == 4)

    await eventually(replays_handled, interval=0.2)
    assert await held() == ("b@example.com", True), "an older announcement never replaces a newer one"


async def test_a_parked_outbox_event_is_shown_then_retried_and_sent(stack: RefundflowStack) -> None:
    merchant_id, _ = await stack.merchant()
    alert = TeamAlertRaised(merchant_id=merchant_id, kind="test_parked", title="A parked event")
    async with stack.db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL search_path TO intake")
        event = await add_event(conn, alert, source="refundflow/intake")
        # As the relay leaves a row the broker refused five times.
        await conn.execute(
            "UPDATE outbox SET parked_at = now(), attempts = 5, last_error = 'MessageSizeTooLargeError'"
            " WHERE event_id = $1",
            event.id,
        )

    shown = await stack.cli("outbox", "--json")
    assert shown.exit_code == 1
    [intake] = [o for o in shown.json()["outboxes"] if o["service"] == "intake"]
    assert intake["parked"] == 1
    assert [p["event_id"] for p in intake["parked_events"]] == [str(event.id)]
    assert {o["service"] for o in shown.json()["outboxes"]} == {"intake", "processor", "notifier"}

    misuse = await stack.cli("outbox", "--event-id", str(event.id))
    assert misuse.exit_code == 2
    unknown = await stack.cli("outbox", "--retry-parked", "--event-id", str(uuid.uuid4()), "--json")
    assert unknown.exit_code == 4

    retried = await stack.cli("outbox", "--service", "intake", "--retry-parked", "--event-id", str(event.id), "--json")
    assert retried.exit_code == 0, retried.stderr
    [intake] = retried.json()["outboxes"]
    assert (intake["retried"], intake["parked"]) == (1, 0)

    async def sent() -> bool:
        return bool(
            await stack.db.fetchval("SELECT sent_at IS NOT NULL FROM intake.outbox WHERE event_id = $1", event.id)
        )

    await eventually(sent)
    human = await stack.cli("outbox")
    assert human.exit_code == 0 and "intake" in human.stdout


async def test_tail_reads_every_record_and_says_why_one_cannot_be_decoded(stack: RefundflowStack) -> None:
    topic = topic_for("subscription.extension_granted", stack.prefix)  # read by the platform: no service consumes it
    payment_id = f"pay_tail_{uuid.uuid4().hex[:8]}"
    good = Event.wrap(
        SubscriptionExtensionGranted(
            merchant_id="mer_tail", payment_id=payment_id, subscription_id="sub_1", days=7, granted_by="ada@example.com"
        ),
        source="refundflow/intake",
        sequence=1,
    )
    bad_json = Event.wrap(good.data, source="refundflow/intake", sequence=2)
    await produce(
        stack.kafka,
        [
            RawRecord(topic, payment_id.encode(), [], b"\xff not an event"),
            RawRecord(topic, payment_id.encode(), raw_headers(good), good.kafka_value()),
            RawRecord(topic, payment_id.encode(), raw_headers(bad_json), b'{"days": "many"}'),
            RawRecord(topic, b"pay_other", [("ce_id", None)], b"{}"),
        ],
    )

    every = await stack.cli("tail", "subscription.extension_granted", "--from-beginning", "--json")
    assert every.exit_code == 0, every.stderr
    lines = [r for r in every.json_lines() if r["key"] == payment_id]  # one key: one partition, in order
    assert [r.get("undecodable", {}).get("reason") for r in lines] == ["missing_attributes", None, "validation_failed"]
    [other] = [r for r in every.json_lines() if r["key"] == "pay_other"]
    assert other["undecodable"]["reason"] == "malformed_headers"
    assert lines[1]["event"]["id"] == str(good.id)
    assert lines[1]["event"]["data"]["granted_by"] == "a***@example.com"

    by_key = await stack.cli("tail", "subscription.extension_granted", "--key", "pay_other", "--json")
    assert [r["key"] for r in by_key.json_lines()] == ["pay_other"]
    last_two = await stack.cli("tail", "subscription.extension_granted", "--key", payment_id, "-n", "2", "--json")
    assert [r.get("undecodable", {}).get("reason") for r in last_two.json_lines()] == [None, "validation_failed"]

    readable = await stack.cli("tail", "subscription.extension_granted", "--from-beginning")
    assert readable.exit_code == 0
    assert "UNDECODABLE missing_attributes" in readable.stdout
    assert f"subscription.extension_granted  id={good.id}" in readable.stdout
    assert "ada@example.com" not in readable.stdout
    missing = await stack.cli("tail", "no.such.topic")
    assert missing.exit_code == 4


async def test_tail_follows_new_records_until_interrupted(stack: RefundflowStack) -> None:
    merchant_id, auth = await stack.merchant()
    payment = await stack.payment(merchant_id)

    async def request(amount: int) -> str:
        body = {"payment_id": payment["id"], "reason": "requested_by_customer", "amount": amount}
        response = await stack.api.post("/v1/refunds", headers={**auth, "Idempotency-Key": uuid.uuid4().hex}, json=body)
        assert response.status_code == 201, response.text
        refund_id: str = response.json()["id"]
        return refund_id

    first = await request(1000)
    follow = await asyncio.create_subprocess_exec(
        *(REFUNDFLOW, "tail", "refund.requested", "--key", payment["id"], "--follow", "--json"),
        env=stack.env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert follow.stdout is not None
    try:
        shown = json.loads(await asyncio.wait_for(follow.stdout.readline(), timeout=60))
        assert shown["event"]["data"]["refund_id"] == first
        second = await request(2000)
        later = json.loads(await asyncio.wait_for(follow.stdout.readline(), timeout=60))
        assert later["event"]["data"]["refund_id"] == second
    finally:
        follow.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(follow.wait(), timeout=30)
    assert code == 0, "Ctrl-C ends --follow cleanly"


async def notifier_lag(stack: RefundflowStack) -> int:
    result = await stack.cli("topics", "--json")
    assert result.exit_code == 0, result.stderr
    [group] = [g for g in result.json()["groups"] if g["service"] == "notifier"]
    lag: int = group["lag"]
    return lag


async def test_a_stopped_consumer_is_rewound_and_rebuilt_without_repeating_an_effect(stack: RefundflowStack) -> None:
    merchant_id, auth = await stack.merchant()
    payment = await stack.payment(merchant_id)
    restore_point = datetime.now(UTC)
    refund_id = await stack.request_refund(auth, payment["id"])

    async def emailed() -> bool:
        status = await stack.db.fetchval(
            "SELECT status FROM notifier.messages WHERE refund_id = $1 AND kind = 'refund_requested'", refund_id
        )
        return bool(status == "sent")

    await eventually(emailed)
    await eventually(lambda: _equals(notifier_lag(stack), 0), interval=0.3)

    running = await stack.cli("consumer", "rewind", "notifier", "--to", restore_point.isoformat(), "--json")
    assert running.exit_code == 5, running.stdout
    assert running.json()["error"]["code"] == "refused"
    assert "is active" in running.stderr and "member" in running.stderr

    await stack.stop_notifier()
    # The notifier's database comes back from a backup taken at the restore point: the request's email is lost.
    lost = await stack.db.fetchval(
        "SELECT event_id FROM notifier.messages WHERE refund_id = $1 AND kind = 'refund_requested'", refund_id
    )
    await stack.db.execute("DELETE FROM notifier.messages WHERE event_id = $1", lost)
    await stack.db.execute("DELETE FROM notifier.inbox WHERE consumer = 'notifier' AND event_id = $1", lost)
    messages_before = await stack.db.fetchval("SELECT count(*) FROM notifier.messages")
    emails_before = len(stack.smtp.messages)

    dry = await stack.cli("consumer", "rewind", "notifier", "--to", restore_point.isoformat(), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert dry.json()["plan"] and dry.json()["rewound"] == []
    assert await notifier_lag(stack) == 0

    # Tansu still lists the member that left (Kafka would not): the operator confirms the service is stopped.
    rewound = await stack.cli(
        "consumer", "rewind", "notifier", "--to", restore_point.isoformat(), "--confirm-stopped", "--json"
    )
    assert rewound.exit_code == 0, rewound.stderr
    moves = rewound.json()["rewound"]
    assert moves == dry.json()["plan"]
    assert {m["topic"] for m in moves} >= {"refund.requested"}
    rereads = sum(m["rereads"] for m in moves)
    assert await notifier_lag(stack) == rereads > 0

    await stack.start_notifier()
    await eventually(lambda: _equals(notifier_lag(stack), 0), interval=0.3)
    await eventually(emailed)
    assert await stack.db.fetchval("SELECT count(*) FROM notifier.messages") == messages_before + 1

    async def mail_settled() -> bool:
        pending = await stack.db.fetchval("SELECT count(*) FROM notifier.messages WHERE status = 'pending'")
        return bool(pending == 0)

    await eventually(mail_settled)
    assert len(stack.smtp.messages) == emails_before + 1, "only the lost email is sent again"
    unknown = await stack.cli("consumer", "rewind", "no-such-group", "--to", "earliest")
    assert unknown.exit_code == 4


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
