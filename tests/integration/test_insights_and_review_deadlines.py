"""Refund insights, and refund.review_overdue once a request waits past the review target (clock moved, not waited)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from refundflow_intake.review_deadlines import flag_overdue
from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
    await intake.db.execute("UPDATE payments SET refunded_amount = 1000 WHERE id = $1", paid[0]["id"])
    await intake.db.execute(
        "UPDATE refunds SET status = 'rejected', decided_at = created_at + interval '30 minutes' WHERE id = $1",
        second["id"],
    )
    end = intake.clock() + timedelta(minutes=1)
    params = {"from": (start - timedelta(hours=2)).isoformat(), "to": end.isoformat()}

    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["reason"], r["requests"], r["amount"], r["refunded_amount"]) for r in body["by_reason"]] == [
        ("duplicate", 2, 1_500, 1_000),
        ("technical_issue", 1, 200, 0),
    ]
    [product] = body["by_product"]
    assert (product["payments"], product["paid_amount"], product["refunded_amount"]) == (4, 4_000, 1_000)
    assert (product["refund_rate"], product["requests"]) == (0.25, 3)
    assert body["decisions"] == {"count": 2, "median_seconds_to_decision": 1_200, "p90_seconds_to_decision": 1_680}
    assert (body["pending_over_24h"], body["pending_over_48h"]) == (0, 0)


async def test_an_inverted_period_is_a_400(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    now = intake.clock()
    params = {"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()}
    response = await intake.client.get("/v1/insights/refunds", headers=merchant, params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_period"
