"""Per-address limits behind a proxy: uvicorn believes X-Forwarded-For only from TRUSTED_PROXIES. Without the setting,
a proxy on another host made every client one address (one shared bucket); and from a peer not trusted, the header
must be ignored, or any client could name itself anew at each attempt."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.dashboard_people import csrf_of
from tests.support.http_servers import serving_as_deployed
from tests.support.intake_harness import running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def behind_the_proxy(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[str]:
    """Intake trusting the test's own address (a proxy on 127.0.0.1 here), two sign-in attempts per client."""
    async with (
        running_intake(
            postgres_url, kafka_bootstrap, login_attempts_per_ip=2, trusted_proxies="10.0.0.0/8,127.0.0.1"
        ) as intake,
        serving_as_deployed(intake.app, intake.settings) as base_url,
    ):
        yield base_url


@pytest.fixture(scope="module")
async def reached_directly(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[str]:
    """Intake trusting a proxy elsewhere: the test's address is an ordinary client's."""
    async with (
        running_intake(postgres_url, kafka_bootstrap, login_attempts_per_ip=2, trusted_proxies="192.0.2.10") as intake,
        serving_as_deployed(intake.app, intake.settings) as base_url,
    ):
        yield base_url


async def sign_in_as(base_url: str, forwarded_for: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, headers={"X-Forwarded-For": forwarded_for}) as person:
        page = await person.get("/dashboard/login")
        email = f"nobody-{uuid.uuid4().hex[:8]}@acme.example"
        answer = await person.post(
            "/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": "x" * 12}
        )
        return answer.status_code


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(behind_the_proxy: str) -> None:
    first = [await sign_in_as(behind_the_proxy, "203.0.113.20") for _ in range(3)]
    assert first == [401, 401, 429]
    assert await sign_in_as(behind_the_proxy, "203.0.113.21") == 401  # another client behind the same proxy


async def test_x_forwarded_for_from_a_peer_not_trusted_is_ignored(reached_directly: str) -> None:
    spoofed = [await sign_in_as(reached_directly, f"203.0.113.{n}") for n in range(3)]
    assert spoofed == [401, 401, 429]  # one client however it names itself
