"""Overdue reviews: one merchant's many long-target requests never hide another merchant's overdue one."""

from __future__ import annotations

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


async def test_201_patient_requests_of_one_merchant_do_not_starve_another_merchants_overdue_one(
    intake: IntakeUnderTest,
) -> None:
    patient, hurried = await intake.merchant(), await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=patient, json={"review_target_hours": 720})
    await intake.client.put("/v1/refund-policy", headers=hurried, json={"review_target_hours": 1})
    many = await intake.payment(patient, amount=10_000)
    for _ in range(201):
        await intake.refund(patient, many["id"], amount=1)
    late = await intake.payment(hurried)
    urgent = await intake.refund(hurried, late["id"])

    async with intake.db.acquire() as conn, conn.transaction():
        flagged = await flag_overdue(conn, intake.clock() + timedelta(hours=3))

    assert flagged == 1
    assert [e["refund_id"] for e in await intake.staged("refund.review_overdue", late["id"])] == [urgent["id"]]
    assert await intake.staged("refund.review_overdue", many["id"]) == []

    # A month later the patient merchant's requests are overdue too: all of them, in batches, each once.
    later = intake.clock() + timedelta(hours=721)
    for _ in range(3):
        async with intake.db.acquire() as conn, conn.transaction():
            await flag_overdue(conn, later)
    overdue = await intake.staged("refund.review_overdue", many["id"])
    assert len(overdue) == len({e["refund_id"] for e in overdue}) == 201
    assert {e["review_target_hours"] for e in overdue} == {720}
