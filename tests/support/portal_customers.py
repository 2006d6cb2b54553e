"""A customer in the portal, driven over HTTP (no browser): their link, the page, the form with the page's CSRF
token. For integration and hostile tests against an in-process intake."""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.dashboard_people import csrf_of
from tests.support.intake_harness import Headers, IntakeUnderTest


class Customer:
    """A customer's browser: keeps cookies, opens their link, sends the form as the page has it."""

    def __init__(self, intake: IntakeUnderTest, url: str) -> None:
        self.path = urlsplit(url).path
        self.browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=intake.app), base_url="http://intake")

    async def open(self) -> httpx.Response:
        return await self.browser.get(self.path)

    async def ask(self, **fields: str) -> httpx.Response:
        page = await self.open()
        assert page.status_code == 200, page.text[:300]
        return await self.browser.post(f"{self.path}/requests", data={**hidden_fields(page.text), **fields})


def hidden_fields(html: str) -> dict[str, str]:
    """The form's hidden inputs, as the page has them (its CSRF token among them)."""
    found = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    assert found.get("csrf_token") == csrf_of(html), "the page has a form with a CSRF token"
    return found


async def link_for(intake: IntakeUnderTest, merchant: Headers, payment_id: str, **body: Any) -> dict[str, Any]:
    answer = await intake.client.post(f"/v1/payments/{payment_id}/portal-token", headers=merchant, json=body)
    assert answer.status_code == 201, answer.text
    token: dict[str, Any] = answer.json()
    return token


def text_of(html: str) -> str:
    """The page's words, tags and runs of spaces gone (what a reader sees, near enough)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
