"""A merchant erases one customer (GDPR Art. 17) through the whole system: intake, processor and notifier as
processes, the sandbox reversing a refund late, the SMTP sink. The address, name, the customer's words and the notes
to them are gone from every service's tables, ids and amounts stay, a reversal found after the erasure carries no
address and emails nobody, and the payment's registration replayed brings nothing back."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from refundflow_shared.events import EventType, topic_for
from tests.browser.stack import ADMIN, Stack, running_stack
from tests.e2e.test_customer_emails import approve, customer_asks, mails
from tests.support.raw_records import RawRecord, produce
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("erasure"), postgres_url, kafka_bootstrap) as running:
        yield running


def query(stack: Stack, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return [dict(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def rows(stack: Stack, sql: str, *args: Any) -> Callable[[], list[dict[str, Any]] | None]:
    """For ``wait_for``: the query's rows, None while there are none."""
    return lambda: query(stack, sql, *args) or None


def erase(stack: Stack, merchant: dict[str, Any], email: str, key: str) -> tuple[int, dict[str, Any]]:
    answer = stack.api.post(
        "/v1/customers/erase", headers={**merchant["auth"], "Idempotency-Key": key}, json={"email": email}
    )
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def test_an_erased_customer_is_gone_from_every_service_and_a_later_reversal_brings_nothing_back(stack: Stack) -> None:
    merchant = stack.merchant(name="Acme Software")
    address = f"Grace.{uuid.uuid4().hex[:6]}@example.com"
    kept = stack.payment(merchant, customer_email=address)  # refunded, then erased
    reversing = stack.payment(
        merchant, customer_email=address, provider_payment_id=f"pi_late_failure_{uuid.uuid4().hex[:10]}"
    )
    other = stack.payment(merchant)  # another customer's: untouched
    asked = customer_asks(stack, merchant, kept, reason="technical_issue", message="My flat is at 3 Elm Street")
    approve(stack, merchant, asked["id"], note_to_customer="Sorry Grace, refunded in full.")
    mails(stack, address, ["Your refund of €49.99 is on its way"])
    emailed_before = len(stack.mails_to(address))

    status, erased = erase(stack, merchant, address.upper(), key="erase-1")
    assert status == 201 and erased["payments_erased"] == 2 and erased["refunds_erased"] == 1
    assert erase(stack, merchant, address.upper(), key="erase-1") == (200, erased), "a retry answers the first"
    # Approved right after the erasure: its success, then the provider's late failure, come after it.
    approve(stack, merchant, stack.request_refund(merchant, reversing)["id"])

    payments = query(
        stack,
        "SELECT id, customer_email, customer_name, amount FROM intake.payments WHERE merchant_id = $1",
        merchant["id"],
    )
    by_id = {p["id"]: p for p in payments}
    assert by_id[kept["id"]]["customer_email"] == "" and by_id[kept["id"]]["customer_name"] is None
    assert by_id[kept["id"]]["amount"] == 4_999, "amounts are kept"
    assert by_id[other["id"]]["customer_email"] == other["customer_email"]
    refund = query(
        stack,
        "SELECT reason, reason_details, customer_note, status FROM intake.refunds WHERE id = $1",
        asked["id"],
    )[0]
    assert refund["reason"] == "technical_issue" and refund["customer_note"] is None
    assert refund["status"] == "succeeded"
    timeline = query(stack, "SELECT actor, note FROM intake.refund_timeline WHERE refund_id = $1", asked["id"])
    assert not [t for t in timeline if address.lower() in (t["actor"] + (t["note"] or "")).lower()]
    assert not [t for t in timeline if "Elm Street" in (t["note"] or "") or "Grace" in (t["note"] or "")]
    assert query(stack, "SELECT 1 FROM intake.customer_erasures WHERE id = $1", erased["id"])

    # The reversal reaches intake: then every service has heard of the erasure and of the outcomes after it.
    wait_for(
        lambda: (
            stack.refund(merchant, stack.payment_refunds(merchant, reversing)[0]["id"])["status"] == "reversed" or None
        ),
        timeout=90,
        what="the late failure",
    )
    wait_for(
        lambda: query(stack, "SELECT 1 FROM notifier.inbox WHERE event_type = 'refund.reversed'") or None,
        timeout=60,
        what="the notifier's reversal",
    )
    erased_payments = {kept["id"], reversing["id"]}
    for schema in ("processor", "notifier"):
        rows = query(stack, f"SELECT payment_id FROM {schema}.erased_payments")
        assert {r["payment_id"] for r in rows} == erased_payments
    processor_refunds = query(
        stack,
        "SELECT customer_email, to_customer::text AS told FROM processor.refunds WHERE payment_id = ANY($1::text[])",
        list(erased_payments),
    )
    assert len(processor_refunds) == 2
    for row in processor_refunds:
        assert row["customer_email"] == "" and "portal_link" not in row["told"] and "Grace" not in row["told"]
    assert not query(
        stack, "SELECT 1 FROM notifier.customer_contacts WHERE payment_id = ANY($1::text[])", list(erased_payments)
    )
    assert not query(stack, "SELECT 1 FROM notifier.messages WHERE lower(recipient) = $1", address.lower())
    kept_events = query(
        stack,
        "SELECT event_type, payload::jsonb -> 'data' AS data FROM notifier.webhook_events"
        " WHERE payload::jsonb -> 'data' ->> 'payment_id' = ANY($1::text[])",
        list(erased_payments),
    )
    assert {"refund.requested", "refund.approved", "refund.succeeded", "refund.reversed"} <= {
        e["event_type"] for e in kept_events
    }
    for kept_event in kept_events:
        data = json.loads(kept_event["data"])
        assert data.get("customer_email", "") == "", kept_event
        assert not {"customer_name", "reason_details", "note_to_customer", "portal_link"} & data.keys(), kept_event
    for schema in ("intake", "processor", "notifier"):
        leaked = query(
            stack,
            f"SELECT event_type FROM {schema}.outbox WHERE lower(convert_from(payload, 'UTF8')) LIKE $1",
            f"%{address.lower()}%",
        )
        assert not leaked, f"{schema}'s outbox keeps the address: {leaked}"
    processor_events = query(
        stack,
        "SELECT event_type FROM processor.outbox WHERE partition_key = $1 AND event_type = 'refund.reversed'",
        reversing["id"],
    )
    assert processor_events, "the reversal was published, without the address (the outbox check above)"
    subjects = [str(m["Subject"]) for m in stack.mails_to(address)]
    assert "Your refund of €49.99 could not be completed" not in subjects, "no email after the erasure"
    assert len(subjects) == emailed_before, f"no email after the erasure: {subjects}"

    # The registration replayed (billing's retry, say) is the same payment and restores nothing; a new payment to
    # the address after the erasure is taken, as any other.
    replay = {
        "merchant_id": merchant["id"],
        "customer_email": address,
        "customer_name": "Ada Lovelace",
        "amount": kept["amount"],
        "currency": kept["currency"],
        "provider_payment_id": kept["provider_payment_id"],
        "paid_at": kept["paid_at"],
        "product": kept["product"],
    }
    again = stack.api.post("/v1/payments", headers=ADMIN, json=replay)
    assert again.status_code == 200, again.text
    assert again.json()["customer_email"] == ""
    later = stack.payment(merchant, customer_email=address)
    assert later["customer_email"] == address


def test_an_old_event_of_an_erased_payment_published_again_under_a_new_id_brings_nothing_back(stack: Stack) -> None:
    """The topics keep the events published before an erasure for days: one read again (a consumer group reset, a
    tool republishing it under a new id) must not restore the address, email the customer or reach a webhook."""
    merchant = stack.merchant(name="Acme Software")
    address = f"lin.{uuid.uuid4().hex[:6]}@example.com"
    payment = stack.payment(merchant, customer_email=address)
    asked = customer_asks(stack, merchant, payment, reason="technical_issue", message="Call me on 0151 2345")
    approve(stack, merchant, asked["id"], note_to_customer="Sorry Lin, refunded in full.")
    mails(stack, address, ["Your refund of €49.99 is on its way"])
    (approved,) = query(
        stack,
        "SELECT headers::text AS headers, payload FROM intake.outbox"
        " WHERE partition_key = $1 AND event_type = 'refund.approved'",
        payment["id"],
    )
    assert address.encode() in approved["payload"], "the event as the topic still holds it"
    erase(stack, merchant, address, key=f"erase-{payment['id']}")
    for schema in ("processor", "notifier"):
        wait_for(
            rows(stack, f"SELECT 1 FROM {schema}.erased_payments WHERE payment_id = $1", payment["id"]),
            timeout=60,
            what=f"the {schema}'s erasure",
        )
    emailed_before = len(stack.mails_to(address))

    again = uuid.uuid4()
    headers = {**json.loads(approved["headers"]), "ce_id": str(again)}
    record = RawRecord(
        topic_for(EventType.REFUND_APPROVED, stack.topic_prefix),
        payment["id"].encode(),
        [(name, value.encode()) for name, value in headers.items()],
        approved["payload"],
    )
    asyncio.run(produce(stack.kafka_bootstrap, [record]))
    for schema in ("processor", "notifier"):
        wait_for(
            rows(stack, f"SELECT 1 FROM {schema}.inbox WHERE event_id = $1", again),
            timeout=60,
            what=f"the {schema} reading the old event again",
        )

    (stored,) = query(
        stack, "SELECT payload::jsonb -> 'data' AS data FROM notifier.webhook_events WHERE event_id = $1", again
    )
    data = json.loads(stored["data"])
    assert data["customer_email"] == "" and "note_to_customer" not in data, data
    assert not query(stack, "SELECT 1 FROM notifier.customer_contacts WHERE payment_id = $1", payment["id"])
    assert not query(stack, "SELECT 1 FROM notifier.messages WHERE lower(recipient) = $1", address.lower())
    (refund,) = query(
        stack,
        "SELECT customer_email, to_customer::text AS told FROM processor.refunds WHERE payment_id = $1",
        payment["id"],
    )
    assert refund["customer_email"] == "" and "Sorry Lin" not in refund["told"]
    assert len(stack.mails_to(address)) == emailed_before
