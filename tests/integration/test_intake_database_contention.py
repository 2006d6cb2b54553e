"""A request whose transaction meets another's locks (a deadlock, a lock wait that timed out) on the real PostgreSQL:
run again when nothing of it was kept, else, or when it keeps failing, 503 ``database_busy`` with a Retry-After, as
JSON to the API and as a page to people. Another session of the test holds the rows intake needs; intake's sessions
get a short ``lock_timeout`` or ``deadlock_timeout`` for the test (set on the database, then the pool renewed)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from structlog.testing import capture_logs

from refundflow_intake import repository
from refundflow_intake.api.errors import install_error_handlers
from refundflow_shared.contention_retries import RetriedRoute
from refundflow_shared.http_metrics import HttpMetrics
from refundflow_shared.metrics import count_after_commit
from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import Headers, IntakeUnderTest, running_intake
from tests.support.portal_customers import Customer, link_for, text_of
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


@asynccontextmanager
async def intake_sessions_with(intake: IntakeUnderTest, **settings: str) -> AsyncIterator[None]:
    """Intake's sessions opened from now on run with ``settings`` (lock_timeout='200ms', say); the pool's
    connections are replaced so that every one of them does."""
    database = await intake.db.fetchval("SELECT current_database()")
    pool = intake.app.state.runtime.pool
    for name, value in settings.items():
        await intake.db.execute(f"ALTER DATABASE \"{database}\" SET {name} = '{value}'")
    await pool.expire_connections()
    try:
        yield
    finally:
        for name in settings:
            await intake.db.execute(f'ALTER DATABASE "{database}" RESET {name}')
        await pool.expire_connections()


@asynccontextmanager
async def payment_row_held(intake: IntakeUnderTest, payment_id: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session's transaction holding the payment's row (as a batch deciding on it would); rolled back at
    the end unless the test commits it."""
    conn = await asyncpg.connect(intake.settings.database_url, server_settings={"search_path": "intake"})
    try:
        # It never waits long itself, and is never the one a deadlock's check picks.
        await conn.execute("SET lock_timeout = 0; SET deadlock_timeout = '60s'")
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", payment_id)
        yield conn
    finally:
        await conn.execute("ROLLBACK")
        await conn.close()


async def intake_waits_for_a_lock(intake: IntakeUnderTest) -> None:
    async def waiting() -> bool:
        return bool(
            await intake.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'refundflow-intake' AND wait_event_type = 'Lock'"
            )
        )

    await eventually(waiting, timeout=10, interval=0.01)


def busy_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] in ("database_busy", "database_contention_retried")]


async def test_a_cancel_kept_waiting_for_a_row_is_tried_again_then_answered_503_database_busy(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)

    async with intake_sessions_with(intake, lock_timeout="200ms"), payment_row_held(intake, payment["id"]):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            answer = await intake.client.post(
                f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant, json={"at_period_end": True}
            )

    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_busy"
    assert set(answer.json()["error"]) == {"code", "message"}
    assert answer.headers["retry-after"] == "1"
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == [], "nothing was kept"
    [line] = busy_lines(logs)
    assert (line["event"], line["log_level"], line["attempts"], line["sqlstate"]) == (
        "database_busy",
        "warning",
        3,
        "55P03",
    )
    assert line["route"] == "/v1/payments/{payment_id}/subscription/cancel" and line["method"] == "POST"
    assert line["merchant_id"] == await intake.merchant_id(merchant), "the request's ids are on the line"
    assert not [line for line in logs if line["event"] == "unhandled_error"]

    again = await intake.client.post(
        f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant, json={"at_period_end": True}
    )
    assert again.status_code == 202, "once the row is free, the same request goes through"


async def test_a_cancel_chosen_as_a_deadlocks_victim_is_run_again_and_succeeds(intake: IntakeUnderTest) -> None:
    """The cancel takes the subscription's lock, then waits for the payment's row, which the other session holds;
    that session then asks for the subscription's lock: a deadlock, and intake's transaction is the one undone."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    merchant_id = await intake.merchant_id(merchant)

    async with intake_sessions_with(intake, deadlock_timeout="50ms"), payment_row_held(intake, payment["id"]) as other:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            cancel = asyncio.create_task(
                intake.client.post(
                    f"/v1/payments/{payment['id']}/subscription/cancel", headers=merchant, json={"at_period_end": True}
                )
            )
            await intake_waits_for_a_lock(intake)
            await repository.lock_subscription(other, merchant_id, payment["subscription"]["id"])
            await other.execute("COMMIT; BEGIN")  # the other session's work is done; the retry may take the rows
            answer = await cancel

    assert answer.status_code == 202, answer.text
    cancels = await intake.staged("subscription.cancel_requested", payment["id"])
    assert [c["at_period_end"] for c in cancels] == [True], "asked once"
    [line] = busy_lines(logs)
    assert (line["event"], line["attempts"], line["sqlstate"]) == ("database_contention_retried", 2, "40P01")


async def test_a_request_run_again_counts_only_what_its_committed_attempt_changed(intake: IntakeUnderTest) -> None:
    """No route of intake waits for a lock after counting a status (each takes its rows first), so a route of the
    test does, as intake's routes run (RetriedRoute inside HttpMetrics): it counts its change, then waits for a row
    another session holds until its lock_timeout; run again, it finds the row free. The undone attempt's count was
    kept and taken with the committed one's: a refund retried once was counted twice."""
    payment_id = (await intake.payment(await intake.merchant()))["id"]
    counted: list[int] = []
    attempts = 0

    async with payment_row_held(intake, payment_id) as other:
        router = APIRouter(route_class=RetriedRoute)

        @router.post("/counted", status_code=204)
        async def counted_then_waits_for_the_row() -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 2:
                await other.execute("ROLLBACK; BEGIN")  # the row is free for the attempt run again
            conn = await asyncpg.connect(intake.settings.database_url, server_settings={"search_path": "intake"})
            try:
                async with conn.transaction():
                    count_after_commit(functools.partial(counted.append, attempts))
                    await conn.execute("SET LOCAL lock_timeout = '100ms'")
                    await conn.execute("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", payment_id)
            finally:
                await conn.close()

        app = FastAPI()
        install_error_handlers(app)
        app.include_router(router)
        app.add_middleware(HttpMetrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            answer = await client.post("/counted")

    assert answer.status_code == 204, answer.text
    assert attempts == 2
    assert counted == [2], "only the attempt that committed is counted"


async def test_a_dashboard_form_kept_waiting_answers_a_503_page(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.subscription_payment(merchant)
    path = f"/dashboard/payments/{payment['id']}"

    async with intake_sessions_with(intake, lock_timeout="200ms"), payment_row_held(intake, payment["id"]):
        answer = await owner.post_form(path, f"{path}/subscription/cancel", {"when": "now"})

    assert answer.status_code == 503, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["retry-after"] == "1"
    shown = text_of(answer.text)
    assert "Busy right now" in shown and "try again in a moment" in shown, shown[:500]
    assert await intake.staged("subscription.cancel_requested", payment["id"]) == []


async def test_a_portal_request_that_counted_an_attempt_is_not_run_again_and_answers_a_503_page(
    intake: IntakeUnderTest,
) -> None:
    """The portal's form counts the attempt against its rate limits (committed) before its transaction: run again,
    it would count twice. It is answered 503 at once, and the customer's page says to try again."""
    merchant: Headers = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    async with intake_sessions_with(intake, lock_timeout="200ms"), payment_row_held(intake, payment["id"]):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            answer = await customer.ask(reason="technical_issue", details="It crashes", amount="20")

    assert answer.status_code == 503, answer.text[:500]
    assert answer.headers["retry-after"] == "1"
    assert "try again in a moment" in text_of(answer.text)
    [line] = busy_lines(logs)
    assert (line["event"], line["attempts"]) == ("database_busy", 1)
    counted = await intake.db.fetchval(
        "SELECT count(*) FROM rate_limit_attempts WHERE bucket = $1", f"portal:{payment['id']}"
    )
    assert counted == 1
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", payment["id"]) == 0


async def test_every_api_operation_lists_database_busy(intake: IntakeUnderTest) -> None:
    paths = (await intake.client.get("/openapi.json")).json()["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items() if path.startswith("/v1/") else ():
            assert "`database_busy`" in operation["responses"]["503"]["description"], (method, path)
