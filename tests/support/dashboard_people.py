"""People in the dashboard, driven over HTTP (no browser): invite, accept, sign in, post forms with the CSRF
token of the page they came from. For integration and security tests against an in-process intake."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from fastapi import FastAPI

from tests.support.intake_harness import ADMIN, IntakeUnderTest

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


@dataclass
class Person:
    email: str
    browser: httpx.AsyncClient  # keeps this person's cookies

    async def page(self, path: str) -> httpx.Response:
        return await self.browser.get(path)

    async def post_form(self, page_path: str, action: str, data: dict[str, Any]) -> httpx.Response:
        """Open ``page_path`` as a person would, then post its form to ``action`` with the page's CSRF token."""
        page = await self.browser.get(page_path)
        assert page.status_code == 200, page.text[:500]
        return await self.browser.post(action, data={"csrf_token": csrf_of(page.text), **data})


class ServesTheDashboard(Protocol):
    """An intake in-process: ``IntakeUnderTest``, or a test's own harness (one with a notifier, say)."""

    @property
    def app(self) -> FastAPI: ...


def browser(intake: ServesTheDashboard, *, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A browser of its own (cookies), at the client ``address`` intake sees."""
    transport = httpx.ASGITransport(app=intake.app, client=(address, 123))
    return httpx.AsyncClient(transport=transport, base_url="http://intake")


async def accept_invite(intake: ServesTheDashboard, invite_url: str, email: str, *, name: str = "") -> Person:
    person = Person(email=email, browser=browser(intake))
    path = invite_url.split("://", 1)[1].split("/", 1)[1]
    page = await person.browser.get(f"/{path}")
    assert page.status_code == 200, page.text[:500]
    accepted = await person.browser.post(
        f"/{path}",
        data={"csrf_token": csrf_of(page.text), "password": PASSWORD, "password_again": PASSWORD, "display_name": name},
    )
    assert accepted.status_code == 303, accepted.text[:500]
    return person


async def merchant_with_owner(
    intake: IntakeUnderTest, *, policy: dict[str, Any] | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> tuple[dict[str, str], Person]:
    """A merchant created by the platform with an owner; the owner accepted the invite and is signed in.
    Returns the merchant's API key header and the owner. ``policy`` and ``overrides`` (by product) are set with the
    key before the owner joins: from then on, a key cannot change the approval rules."""
    email = f"owner-{uuid.uuid4().hex[:8]}@acme.example"
    created = await intake.client.post("/v1/merchants", json={"name": "Acme", "owner_email": email}, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    intake.merchant_ids[body["api_key"]] = body["id"]
    key = {"Authorization": f"Bearer {body['api_key']}"}
    if policy is not None:
        saved = await intake.client.put("/v1/refund-policy", headers=key, json=policy)
        assert saved.status_code == 200, saved.text
    for product_id, override in (overrides or {}).items():
        saved = await intake.client.put(f"/v1/refund-policy/products/{product_id}", headers=key, json=override)
        assert saved.status_code == 200, saved.text
    owner = await accept_invite(intake, body["owner_invite_url"], email, name="Olive Owner")
    return {"Authorization": f"Bearer {body['api_key']}"}, owner


async def invite(intake: IntakeUnderTest, owner: Person, role: str) -> Person:
    """The owner invites someone with ``role`` on the Team page; they accept."""
    email = f"{role}-{uuid.uuid4().hex[:8]}@acme.example"
    answer = await owner.post_form("/dashboard/team", "/dashboard/team/invite", {"email": email, "role": role})
    assert answer.status_code == 200, answer.text[:500]
    found = re.search(r'<code id="invite-url">([^<]+)</code>', answer.text)
    assert found, "the invite link is shown once on the page"
    return await accept_invite(intake, found.group(1), email)


async def sign_in(
    intake: IntakeUnderTest, email: str, password: str = PASSWORD, *, address: str = "127.0.0.1"
) -> httpx.Response:
    """A fresh browser signs in; the answer (303 with the session cookie, or the page again) is returned."""
    client = browser(intake, address=address)
    page = await client.get("/dashboard/login")
    return await client.post(
        "/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password}
    )
