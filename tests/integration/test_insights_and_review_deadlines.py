"""Refund insights, and refund.review_overdue once a request waits past the review target (clock moved, not waited)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from refundflow_intake.dashboard import queries
from refundflow_intake.review_deadlines import flag_overdue
from refundflow_shared.events import Event, EventData, RefundExternalDetected, RefundReversed, RefundSucceeded
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
PROCESSOR = "refundflow/processor"


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_request_past_the_review_target_is_reported_once(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"review_target_hours": 24})
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    decided = await intake.refund(merchant, (await intake.payment(merchant))["id"])
    await intake.client.post(f"/v1/refunds/{decided['id']}/reject", headers=merchant)

    async def check_at(hours: float) -> None:
        async with intake.db.acquire() as conn, conn.transaction():
            await flag_overdue(conn, intake.clock() + timedelta(hours=hours))

    await check_at(23.9)
    assert await intake.staged("refund.review_overdue", payment["id"]) == []
    await check_at(24.1)
    await check_at(48)
    overdue = await intake.staged("refund.review_overdue", payment["id"])
    assert [(e["refund_id"], e["review_target_hours"]) for e in overdue] == [(refund["id"], 24)]
    timeline = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["timeline"]
    assert [(t["action"], t["actor"]) for t in timeline][-1] == ("review_overdue", "system:review_clock")
    assert (
        await intake.db.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'refund.review_overdue' AND payload::text LIKE $1",
            f"%{decided['id']}%",
        )
        == 0
    )


async def test_a_request_no_alert_can_describe_is_marked_and_holds_up_no_other(intake: IntakeUnderTest) -> None:
    """A row an event cannot carry (here a review target an older release allowed) does not stop the clock:
    the request is still marked overdue, its timeline says the team was not alerted, and the rest are alerted."""
    merchant = await intake.merchant()
    unreadable_payment, payment = await intake.payment(merchant), await intake.payment(merchant)
    unreadable = await intake.refund(merchant, unreadable_payment["id"])
    refund = await intake.refund(merchant, payment["id"])
    await intake.db.execute("UPDATE refunds SET review_target_hours = 0 WHERE id = $1", unreadable["id"])

    async with intake.db.acquire() as conn, conn.transaction():
        await flag_overdue(conn, intake.clock() + timedelta(hours=10_000))

    assert [e["refund_id"] for e in await intake.staged("refund.review_overdue", payment["id"])] == [refund["id"]]
    assert await intake.staged("refund.review_overdue", unreadable_payment["id"]) == []
    timeline = (await intake.client.get(f"/v1/refunds/{unreadable['id']}", headers=merchant)).json()["timeline"]
    assert timeline[-1]["action"] == "review_overdue" and "not alerted" in timeline[-1]["note"]
    assert await intake.db.fetchval("SELECT review_overdue_at FROM refunds WHERE id = $1", unreadable["id"])


async def test_the_running_service_reports_overdue_requests_on_its_own_clock(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    await intake.refund(merchant, payment["id"])
    intake.clock.advance(timedelta(hours=49))
    try:
        for _ in range(100):
            if await intake.staged("refund.review_overdue", payment["id"]):
                break
            await asyncio.sleep(0.1)
    finally:
        intake.clock.advance(-timedelta(hours=49))
    assert len(await intake.staged("refund.review_overdue", payment["id"])) == 1


async def test_insights_count_by_reason_and_product_and_time_the_decisions(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    start = intake.clock() - timedelta(hours=1)
    course = {"id": f"prod_{uuid.uuid4().hex[:6]}", "name": "Course", "kind": "one_time", "category": "digital"}
    paid_at = intake.clock().isoformat()
    paid = [await intake.payment(merchant, amount=1_000, product=course, paid_at=paid_at) for _ in range(4)]
    first = await intake.refund(merchant, paid[0]["id"], reason="duplicate")
    second = await intake.refund(merchant, paid[1]["id"], reason="duplicate", amount=500)
    await intake.refund(merchant, paid[2]["id"], reason="technical_issue", amount=200)
    # Decisions 10 and 30 minutes after the request; the first also succeeds at the provider.
    await intake.db.execute(
        "UPDATE refunds SET created_at = now() - interval '2 hours' WHERE id = ANY($1::text[])",
        [first["id"], second["id"]],
    )
    await intake.db.execute(
        "UPDATE refunds SET status = 'succeeded', decided_at = created_at + interval '10 minutes' WHERE id = $1",
        first["id"],
    )
    await intake.db.execute(
        "UPDATE refunds SET status = 'rejected', decided_at = created_at + interval '30 minutes' WHERE id = $1",
        second["id"],
    )
    end = intake.clock() + timedelta(minutes=1)
    params = {"from": (start - timedelta(hours=2)).isoformat(), "to": end.isoformat()}

    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["reason"], r["requests"], r["amount"]) for r in body["by_reason"]] == [
        ("duplicate", 2, 1_500),
        ("technical_issue", 1, 200),
    ]
    [product] = body["by_product"]
    assert (product["payments"], product["paid_amount"], product["requests"]) == (4, 4_000, 3)
    assert body["decisions"] == {"count": 2, "median_seconds_to_decision": 1_200, "p90_seconds_to_decision": 1_680}
    assert (body["pending_over_24h"], body["pending_over_48h"]) == (0, 0)


async def test_an_inverted_period_is_a_400(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    now = intake.clock()
    params = {"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()}
    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_period"


async def test_a_period_longer_than_a_leap_year_is_a_400(intake: IntakeUnderTest) -> None:
    """A period of years read years of payments and requests while other merchants waited on the database."""
    merchant = await intake.merchant()
    now = intake.clock()
    longest = {"from": (now - timedelta(days=366)).isoformat(), "to": now.isoformat()}
    assert (await intake.client.get("/v1/insights/refunds", headers=merchant, params=longest)).status_code == 200
    too_long = {"from": (now - timedelta(days=366, seconds=1)).isoformat(), "to": now.isoformat()}
    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=too_long)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_period")
    assert "366 days" in response.json()["error"]["message"]


async def test_a_read_past_its_statement_timeout_is_a_503_not_a_500(postgres_url: str, kafka_bootstrap: str) -> None:
    """One heavy read held a pool connection, and the database, for as long as it ran (a minute, seen): a read of
    the API or the dashboard is now stopped by PostgreSQL after READ_STATEMENT_TIMEOUT_SECONDS, answered 503
    read_timed_out. The read here waits on a lock the test holds, which counts towards it as running would."""
    async with running_intake(postgres_url, kafka_bootstrap, read_statement_timeout_seconds=0.5) as intake:
        merchant = await intake.merchant()
        async with intake.db.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE balance_entries IN ACCESS EXCLUSIVE MODE")
            read = intake.client.get("/v1/insights/refunds", headers=merchant)
            response = await asyncio.wait_for(read, timeout=10)  # else it waits for the lock as long as it is held
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "read_timed_out"
        # The pool's connection is whole again, and a read without the lock answers.
        assert (await intake.client.get("/v1/insights/refunds", headers=merchant)).status_code == 200


async def test_every_refunded_figure_is_the_money_that_left_as_the_balance_counts_it(intake: IntakeUnderTest) -> None:
    """Refunds that reached the customer, ours and those made at the provider, less reversals, by when they settled:
    the insights' refunded (in all, by reason, by product) and the dashboard's weekly series agree with the balance.
    A refund approved and still at the provider is not refunded, nor one reversed since."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    start = intake.clock() - timedelta(days=3)
    course = {"id": f"prod_{uuid.uuid4().hex[:6]}", "name": "Course", "kind": "one_time", "category": "digital"}
    paid = [await intake.payment(merchant, amount=2_000, product=course) for _ in range(4)]
    kept = await intake.refund(merchant, paid[0]["id"], reason="duplicate", amount=1_000)
    reversed_ = await intake.refund(merchant, paid[1]["id"], reason="duplicate", amount=500)
    waiting = await intake.refund(merchant, paid[2]["id"], reason="technical_issue", amount=300)
    for refund in (kept, reversed_, waiting):
        await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)

    def outcome(kind: type[RefundSucceeded] | type[RefundReversed], refund: dict[str, Any]) -> EventData:
        extra = {"failure_reason": "expired_or_canceled_card"} if kind is RefundReversed else {}
        return kind(
            refund_id=refund["id"], payment_id=refund["payment_id"], merchant_id=merchant_id,
            customer_email="ada@example.com", amount=refund["amount"], currency="EUR",
            provider_refund_id=f"re_{refund['id']}", **extra,
        )  # fmt: skip

    external = RefundExternalDetected(
        payment_id=paid[3]["id"], merchant_id=merchant_id, amount=400, currency="EUR",
        provider_refund_id=f"re_dashboard_{uuid.uuid4().hex[:8]}", provider_payment_id=paid[3]["provider_payment_id"],
        status="succeeded",
    )  # fmt: skip
    sent = [await intake.publish(outcome(RefundSucceeded, r), source=PROCESSOR) for r in (kept, reversed_)]
    sent.append(await intake.publish(external, source=PROCESSOR))

    async def handled(events: list[Event]) -> bool:
        count = await intake.db.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])", [e.id for e in events]
        )
        return bool(count == len(events))

    await eventually(lambda: handled(sent), timeout=30)
    reversal = [await intake.publish(outcome(RefundReversed, reversed_), source=PROCESSOR)]
    await eventually(lambda: handled(reversal), timeout=30)
    [line] = (await intake.client.get("/v1/balance", headers=merchant)).json()["data"]
    assert line["refunded"] == 1_400

    end = intake.clock() + timedelta(minutes=1)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    body = (await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)).json()

    assert body["refunded"] == [{"currency": "EUR", "amount": 1_400}]
    assert [(r["reason"], r["requests"], r["refunded"], r["refunded_amount"]) for r in body["by_reason"]] == [
        ("duplicate", 2, 1, 1_000),
        ("technical_issue", 1, 0, 0),
    ]
    [product] = body["by_product"]
    assert (product["paid_amount"], product["refunded_amount"], product["refunded_payments"]) == (8_000, 1_400, 2)
    assert product["refund_rate"] == 0.175
    async with intake.db.acquire() as conn:
        weeks = await queries.weekly_series(conn, merchant_id, "EUR", start, end)
    assert sum(w["refunded"] for w in weeks) == 1_400
