"""Sign-ins that cannot be checked soon are refused at once: every attempt (an unknown address too) costs an Argon2id
check of ~100 ms in one of two threads, and waiting ones piled up without limit until uvicorn's connection limit
answered 503 to everything the process serves (the merchant API, the portal, health)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from refundflow_intake import passwords
from refundflow_intake.one_time_links import LinkPurpose, create_link
from tests.support.dashboard_people import browser, csrf_of
from tests.support.http_servers import serving_as_deployed
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
ATTEMPTS = 40


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap, password_hashes_waiting_max=4) as running:
        yield running


async def sign_in_over_http(base_url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as person:
        page = await person.get("/dashboard/login")
        return await person.post(
            "/dashboard/login",
            data={
                "csrf_token": csrf_of(page.text),
                "email": f"nobody-{uuid.uuid4().hex[:8]}@acme.example",
                "password": "x" * 12,
            },
        )


async def test_sign_ins_past_the_hash_queue_are_refused_at_once_with_a_page_and_retry_after(
    intake: IntakeUnderTest,
) -> None:
    async with serving_as_deployed(intake.app, intake.settings) as base_url:
        answers = await asyncio.gather(*(sign_in_over_http(base_url) for _ in range(ATTEMPTS)))
        statuses = [a.status_code for a in answers]
        busy = [a for a in answers if a.status_code == 503]
        assert set(statuses) == {401, 503}, statuses
        # Two hashing at once and four waiting: the rest could not be checked soon.
        assert statuses.count(401) <= ATTEMPTS // 2, statuses
        for answer in busy:
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.headers["content-type"].startswith("text/html")
            assert "password_checks_busy" in answer.text and "try again" in answer.text
        after = await sign_in_over_http(base_url)  # once the queue is gone, a sign-in is checked again
        assert after.status_code == 401


async def _one_hash() -> None:
    with contextlib.suppress(passwords.PasswordChecksBusy):  # the point: the queue is full
        await passwords.verify(None, "x" * 12)


@contextlib.asynccontextmanager
async def hashing_kept_busy() -> AsyncIterator[None]:
    """Hashes asked for faster than the two threads check them, until the block ends."""
    hashes: set[asyncio.Task[None]] = set()

    async def keep_asking() -> None:
        while True:
            started = asyncio.create_task(_one_hash())
            hashes.add(started)
            started.add_done_callback(hashes.discard)
            await asyncio.sleep(0.01)

    asking = asyncio.create_task(keep_asking())
    await asyncio.sleep(0.1)
    try:
        yield
    finally:
        asking.cancel()
        await asyncio.gather(asking, *hashes, return_exceptions=True)


async def test_setting_a_password_from_an_invite_or_a_reset_is_refused_at_once_too(intake: IntakeUnderTest) -> None:
    email = f"owner-{uuid.uuid4().hex[:8]}@acme.example"
    created = await intake.client.post("/v1/merchants", json={"name": "Acme", "owner_email": email}, headers=ADMIN)
    invite_path = "/" + created.json()["owner_invite_url"].split("/", 3)[3]
    person = browser(intake)
    page = await person.get(invite_path)
    new_password = {"csrf_token": csrf_of(page.text), "password": "x" * 12, "password_again": "x" * 12}
    async with hashing_kept_busy():
        refused = await person.post(invite_path, data=new_password)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "password_checks_busy" in refused.text and "try again" in refused.text
    assert (await person.post(invite_path, data=new_password)).status_code == 303  # the link was not spent

    member_id = await intake.db.fetchval("SELECT id FROM merchant_users WHERE email = $1", email)
    async with intake.db.acquire() as conn:
        token, _ = await create_link(
            conn, LinkPurpose.PASSWORD_RESET, member_id, now=intake.clock(), valid_for=timedelta(hours=1)
        )
    reset_path = f"/dashboard/reset-password/{token}"
    page = await person.get(reset_path)
    new_password["csrf_token"] = csrf_of(page.text)
    async with hashing_kept_busy():
        refused = await person.post(reset_path, data=new_password)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert (await person.post(reset_path, data=new_password)).status_code == 303
