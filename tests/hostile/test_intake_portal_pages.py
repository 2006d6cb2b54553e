"""What strangers can do with the portal's pages: forged, tampered, expired and foreign links, forms without the
page's token or with bad input, merchant-set text that tries to be markup. Nothing private is shown, nothing is
written, every answer is a page that names nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake
from tests.support.portal_customers import Customer, link_for, text_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_form_without_its_pages_token_or_with_bad_input_is_refused_with_the_page_and_nothing_written(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    before = await intake.written()

    forged = await customer.browser.post(f"{customer.path}/requests", data={"reason": "duplicate"})
    other = await customer.ask(reason="other")
    too_much = await customer.ask(reason="duplicate", amount="100000")

    assert forged.status_code == 403 and "Please check your request and send it again." in forged.text
    assert other.status_code == 422 and "please tell us what happened" in other.text
    assert too_much.status_code == 422 and "at most €100.00" in text_of(too_much.text)
    assert await intake.written() == before


@pytest.mark.parametrize("typed", ["it broke\x00 badly", "it broke\x07 badly", "it broke\x1b[31m badly"])
async def test_a_control_character_in_what_happened_is_asked_again_on_its_field_and_uses_no_attempt(
    intake: IntakeUnderTest, typed: str
) -> None:
    """A NUL reached the INSERT after both attempts were counted: "This page cannot be shown", the form lost and
    an attempt used; the other control characters were stored, no one's typing."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    attempts = "SELECT count(*) FROM rate_limit_attempts"
    before = await intake.written(), await intake.db.fetchval(attempts)

    answer = await customer.ask(reason="other", details=typed, amount="10")

    assert answer.status_code == 422
    textarea = re.search(r'<textarea id="details"[^>]*>', answer.text)
    assert textarea is not None and 'aria-describedby="details-error"' in textarea.group(0)
    assert "What happened? holds a character that is not text" in text_of(answer.text)
    assert "it broke" in answer.text and "badly" in answer.text, "what was typed is kept"
    assert (await intake.written(), await intake.db.fetchval(attempts)) == before


async def test_line_breaks_and_tabs_in_what_happened_are_text(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    assert (await customer.ask(reason="other", details="Step 1:\tlog in\r\nStep 2: it fails")).status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert refund["reason_details"] == "Step 1:\tlog in\nStep 2: it fails"


@pytest.mark.parametrize("message", ["it broke\x00 badly", "it broke\x07 badly"])
async def test_a_control_character_in_the_portal_apis_message_is_refused_on_its_field_and_uses_no_attempt(
    intake: IntakeUnderTest, message: str
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    token = (await link_for(intake, merchant, payment["id"]))["token"]
    attempts = "SELECT count(*) FROM rate_limit_attempts"
    before = await intake.written(), await intake.db.fetchval(attempts)

    answer = await intake.client.post(
        "/v1/portal/refund-requests",
        headers={"Authorization": f"Bearer {token}"},
        json={"reason": "other", "message": message},
    )

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert [d["loc"] for d in error["details"]] == [["body", "message"]]
    assert (await intake.written(), await intake.db.fetchval(attempts)) == before


async def test_an_expired_tampered_or_foreign_link_shows_nothing_of_any_payment(intake: IntakeUnderTest) -> None:
    merchant, stranger = await intake.merchant(), await intake.merchant()
    payment = await intake.payment(merchant, product={"id": "p", "name": "Secret plan", "kind": "one_time"})
    theirs = await intake.payment(stranger)
    their_refund = await intake.refund(stranger, theirs["id"], amount=100)
    link = await link_for(intake, merchant, payment["id"], expires_in_hours=1)
    customer = Customer(intake, link["url"])
    payload, signature = link["token"].split(".")

    tampered = await customer.browser.get(f"/portal/{payload[:-2]}xx.{signature}")
    assert tampered.status_code == 404 and "This link does not work" in tampered.text
    foreign = await customer.browser.get(f"{customer.path}/requests/{their_refund['id']}/status")
    assert foreign.status_code == 404 and their_refund["id"] not in foreign.text
    intake.clock.advance(timedelta(hours=1, seconds=1))
    try:
        expired = await customer.open()
        expired_post = await customer.browser.post(f"{customer.path}/requests", data={"reason": "duplicate"})
    finally:
        intake.clock.advance(-timedelta(hours=1, seconds=1))
    assert expired.status_code == 410 and "This link has expired" in expired.text
    assert expired_post.status_code == 410
    for answer in (tampered, foreign, expired, expired_post):
        assert "Secret plan" not in answer.text and "Acme" not in answer.text and "€" not in answer.text
    # Naming no merchant, they cannot know whether a reply reaches it (without a reply-to, it reaches the platform).
    assert all("reply to" not in answer.text.lower() for answer in (tampered, expired))


async def test_a_link_too_long_or_of_another_kind_answers_a_page_that_names_nothing(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    api_key = merchant["Authorization"].removeprefix("Bearer ")
    for path in (f"/portal/pt_{'a' * 3000}", f"/portal/{api_key}", "/portal/pt_%00.x", f"/policy/{'m' * 300}"):
        answer = await intake.client.get(path)
        assert answer.status_code in (404, 422), (path[:40], answer.status_code)
        assert answer.headers["content-type"].startswith("text/html"), path[:40]
        assert "Acme" not in answer.text and "Traceback" not in answer.text


async def test_merchant_set_text_is_shown_as_text_on_every_customer_page_and_in_the_snippet(
    intake: IntakeUnderTest,
) -> None:
    name = '<script>alert(1)</script> "Acme"'
    created = await intake.client.post("/v1/merchants", json={"name": name}, headers=ADMIN)
    merchant = {"Authorization": f"Bearer {created.json()['api_key']}"}
    intake.merchant_ids[created.json()["api_key"]] = created.json()["id"]
    await intake.client.put(
        "/v1/refund-policy", headers=merchant, json={"process_time": "<img src=x onerror=alert(1)>"}
    )
    product = {"id": "p", "name": "<b>Pro</b>", "kind": "one_time", "category": "<i>digital</i>"}
    payment = await intake.payment(merchant, product=product)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    assert (await customer.ask(reason="other", details="<script>steal()</script>")).status_code == 303

    pages = [
        (await customer.open()).text,
        (await intake.client.get(f"/policy/{created.json()['id']}")).text,
        (await intake.client.get(f"/policy/{created.json()['id']}/embed")).text,
    ]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>Pro" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>steal" not in pages[0] and "&lt;script&gt;steal()&lt;/script&gt;" in pages[0]
    assert "Pro" in text_of(pages[0])
