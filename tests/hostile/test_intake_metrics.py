"""Intake counts a refund's status only once the change committed: a decision rolled back (its event would be over
the broker's limit) is answered 422 and counted nowhere but in the HTTP metrics, by route template. And a real
background job that died fails /readyz, by name."""

from __future__ import annotations

from datetime import timedelta

from refundflow_shared.event_decoding import DEFAULT_MAX_EVENT_BYTES
from refundflow_shared.outbox import limit_event_size
from tests.support.intake_harness import running_intake
from tests.support.metrics_scrape import Scrape, parse
from tests.support.probe_service import eventually


async def test_a_rolled_back_approval_is_not_counted_and_the_committed_one_is(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    try:
        async with running_intake(postgres_url, kafka_bootstrap, event_max_bytes=2048) as intake:

            async def scrape() -> Scrape:
                response = await intake.client.get("/metrics")
                assert response.status_code == 200
                return parse(response.text)

            merchant = await intake.merchant()
            payment = await intake.payment(merchant)
            before = await scrape()
            refund = await intake.refund(merchant, payment["id"])
            approve = f"/v1/refunds/{refund['id']}/approve"
            too_large = await intake.client.post(approve, headers=merchant, json={"note_to_customer": "n" * 2000})
            assert too_large.status_code == 422, too_large.text
            assert too_large.json()["error"]["code"] == "event_too_large"
            refused = await scrape()
            approved = await intake.client.post(approve, headers=merchant)
            assert approved.status_code == 200, approved.text
            after = await scrape()
    finally:
        limit_event_size(DEFAULT_MAX_EVENT_BYTES)

    def moved(since: Scrape, until: Scrape, name: str, /, **labels: str) -> float:
        return until.value(name, **labels) - since.value(name, **labels)

    refunds = "refundflow_refunds_total"
    assert moved(before, refused, refunds, status="pending") == 1
    assert moved(before, refused, refunds, status="processing") == 0, "rolled back: not counted"
    assert moved(refused, after, refunds, status="processing") == 1
    route = "/v1/refunds/{refund_id}/approve"
    requests = "refundflow_http_requests_total"
    assert moved(before, refused, requests, method="POST", route=route, status="422") == 1
    assert moved(refused, after, requests, method="POST", route=route, status="200") == 1


async def test_readyz_answers_503_naming_a_real_background_job_that_died(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    async with running_intake(postgres_url, kafka_bootstrap) as intake:
        assert (await intake.client.get("/readyz")).status_code == 200
        # The review-deadline job's clock breaks (past the year 9999, it cannot say the time): an error no retry
        # could cure, so the job ends. (A row it cannot make an alert of no longer ends it: see the
        # review-deadline tests.)
        intake.clock.advance(timedelta(days=3_000_000))
        runtime = intake.app.state.runtime

        clocked = {"review_deadlines", "awaited_events"}  # the jobs that read the clock

        async def died() -> bool:
            return clocked <= set(runtime.dead_jobs)

        await eventually(died)
        unready = await intake.client.get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["checks"] == {"database": True, "jobs": False}
    assert sorted(unready.json()["dead_jobs"]) == sorted(clocked)
