"""What people type into the dashboard's forms is held to the API's rules for the same text, and what cannot be
stored (or sent on: its event over the broker's limit), or asked of a list (a page past its depth), is a page
saying so, never a 500 or the API's JSON."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from refundflow_intake.dashboard.auth import SESSION_COOKIE
from refundflow_shared.outbox import limit_event_size
from tests.support.dashboard_people import PASSWORD, accept_invite, browser, csrf_of, merchant_with_owner
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake
from tests.support.portal_customers import Customer, link_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_name_chosen_when_accepting_an_invite_is_one_line_that_does_not_look_like_an_address(
    intake: IntakeUnderTest,
) -> None:
    """The name is printed in every invitation this person sends ("<name> invited you"): with a line break, or a
    look-alike address, they would write the invited person's email."""
    email = f"owner-{uuid.uuid4().hex[:8]}@acme.example"
    created = await intake.client.post("/v1/merchants", json={"name": "Acme", "owner_email": email}, headers=ADMIN)
    link = created.json()["owner_invite_url"]
    path = "/" + link.split("/", 3)[3]
    person = browser(intake)
    for name in (
        "Olive\n\nAlso confirm your bank details at https://evil.example",
        "Olive\x1b[2J",
        "Olive <ceo@x.example>",
    ):
        page = await person.get(path)
        form = {"csrf_token": csrf_of(page.text), "password": PASSWORD, "password_again": PASSWORD}
        refused = await person.post(path, data={**form, "display_name": name})
        assert refused.status_code == 422, (name, refused.text[:300])
        assert refused.headers["content-type"].startswith("text/html") and SESSION_COOKIE not in refused.cookies
    member = await intake.db.fetchrow("SELECT display_name, activated_at FROM merchant_users WHERE email = $1", email)
    assert member is not None and (member["display_name"], member["activated_at"]) == (None, None)
    await accept_invite(intake, link, email, name="Olive Owner")  # the link was not used up


async def test_an_api_key_named_in_the_dashboard_is_one_line_as_in_the_api(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    refused = await owner.post_form("/dashboard/settings", "/dashboard/settings/api-keys", {"name": "deploy\r\nbot"})
    assert refused.status_code == 422 and "rfk_" not in refused.text, refused.text[:300]
    names = await intake.db.fetch(
        "SELECT name FROM api_keys WHERE merchant_id = $1", await intake.merchant_id(merchant)
    )
    assert [r["name"] for r in names] == ["default"]


async def test_a_decisions_notes_with_line_breaks_count_as_the_browser_counts_them_and_too_long_are_kept(
    intake: IntakeUnderTest,
) -> None:
    """A browser counts a line break as one character against the textarea's maxlength but sends two (CRLF)."""
    merchant, owner = await merchant_with_owner(intake)
    approved, rejected, too_long = [
        await intake.refund(merchant, (await intake.payment(merchant))["id"]) for _ in range(3)
    ]
    typed = "\r\n".join(["x" * 29] * 66)  # 1979 characters as the browser counts them, 2044 as it sends them

    def decide(refund: dict[str, Any], action: str, form: dict[str, str]) -> Any:
        page = f"/dashboard/refunds/{refund['id']}"
        return owner.post_form(page, f"{page}/{action}", form)

    approving = await decide(approved, "approve", {"note": typed, "note_to_customer": typed})
    rejecting = await decide(rejected, "reject", {"note": typed})
    assert (approving.status_code, rejecting.status_code) == (303, 303), (approving.text[:300], rejecting.text[:300])
    notes = await intake.db.fetch(
        "SELECT note FROM refund_timeline WHERE refund_id = ANY($1::text[]) AND action IN ('approved', 'rejected')"
        " UNION ALL SELECT customer_note FROM refunds WHERE id = $2",
        [approved["id"], rejected["id"]],
        approved["id"],
    )
    assert [r["note"] for r in notes] == [typed.replace("\r\n", "\n")] * 3

    long = "y" * 2001
    for action, form in (
        ("approve", {"note_to_customer": long}),
        ("approve", {"note": long}),
        ("reject", {"note": long}),
    ):
        refused = await decide(too_long, action, form)
        assert refused.status_code == 422, (action, form.keys(), refused.text[:300])
        assert "is 2001 characters long: please shorten it to 2000 at most." in refused.text, refused.text[:300]
        assert f">{long}</textarea>" in refused.text, "what they wrote is still there"
    assert (await intake.db.fetchval("SELECT status FROM refunds WHERE id = $1", too_long["id"])) == "pending"


async def test_text_postgresql_cannot_store_is_a_422_page_in_the_dashboard(intake: IntakeUnderTest) -> None:
    _, owner = await merchant_with_owner(intake)
    stranger = browser(intake)
    page = await stranger.get("/dashboard/login")
    login = await stranger.post(
        "/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": "a\x00@x.example", "password": "x"}
    )
    search = await owner.page("/dashboard/payments?q=%00")
    for answer in (login, search):
        assert answer.status_code == 422, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html") and "invalid_request" in answer.text


async def test_a_payments_page_past_the_lists_depth_is_a_422_page_that_says_to_search_instead(
    intake: IntakeUnderTest,
) -> None:
    """Every payment on the pages before it is read (its refunds counted): page 10,000 read 200,000 payments."""
    _, owner = await merchant_with_owner(intake)
    deepest = await owner.page("/dashboard/payments?page=100")
    assert deepest.status_code == 200, deepest.text[:300]
    for page in (101, 10_000, 2**70):
        refused = await owner.page(f"/dashboard/payments?page={page}&q=ada")
        assert refused.status_code == 422, (page, refused.text[:300])
        assert refused.headers["content-type"].startswith("text/html") and "page_too_deep" in refused.text
        assert "100 pages" in refused.text and "search" in refused.text.lower()


async def test_a_change_whose_event_is_over_the_brokers_limit_is_a_422_page_on_pages_and_json_in_the_api(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    refund = await intake.refund(merchant, (await intake.payment(merchant))["id"])
    customer = Customer(intake, (await link_for(intake, merchant, (await intake.payment(merchant))["id"]))["url"])
    limit_event_size(256)  # this process's limit (EVENT_MAX_BYTES): every refund's event is over it
    try:
        approved = await owner.post_form(
            f"/dashboard/refunds/{refund['id']}", f"/dashboard/refunds/{refund['id']}/approve", {}
        )
        asked = await customer.ask(reason="duplicate")
        by_api = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant)
    finally:
        limit_event_size(intake.settings.event_max_bytes)

    for page in (approved, asked):
        assert page.status_code == 422, page.text[:300]
        assert page.headers["content-type"].startswith("text/html"), page.text[:300]
    assert "event_too_large" in approved.text, "the dashboard's error page names the API's code"
    assert by_api.status_code == 422 and by_api.json()["error"]["code"] == "event_too_large"
    statuses = await intake.db.fetch(
        "SELECT status FROM refunds WHERE merchant_id = $1", await intake.merchant_id(merchant)
    )
    assert [r["status"] for r in statuses] == ["pending"], "nothing was written"


async def test_the_policy_forms_categories_are_kept_whole_up_to_the_apis_limit_and_more_is_a_form_error(
    intake: IntakeUnderTest,
) -> None:
    """The API takes 50 categories of 100 characters, all shown in the textarea: the form cut what was sent at 2000
    characters, so saving the window dropped the later categories and halved one, without a word."""
    merchant, owner = await merchant_with_owner(intake)
    categories = [f"{n:02d}" + "c" * 98 for n in range(50)]
    put = await intake.client.put("/v1/refund-policy", headers=merchant, json={"excluded_categories": categories})
    assert put.status_code == 200, put.text
    page = "/dashboard/refund-policy"
    shown = (await owner.page(page)).text
    assert "\n".join(categories) in shown, "the textarea holds them all"
    form = {"review_target_hours": "48", "process_time": "5 days", "accepted_reasons": ["duplicate"]}

    def policy_form(window: str, typed: list[str]) -> dict[str, Any]:
        return {**form, "refund_window_days": window, "excluded_categories": "\r\n".join(typed)}  # as browsers send

    saved = await owner.post_form(page, page, policy_form("21", categories))
    assert saved.status_code == 303, saved.text[:500]
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert (policy["refund_window_days"], policy["excluded_categories"]) == (21, categories)

    for window, typed, says in (
        ("22", [*categories, "one more"], "at most 50"),
        ("22", ["x" * 101], "at most 100 characters"),
        ("22", ["x" * 6000], "at most 100 characters"),
        ("22", ["x" * 20_000], "is 20000 characters long: at most 10200"),
        ("", categories, "refund window days"),  # was the default (14) without a word
    ):
        refused = await owner.post_form(page, page, policy_form(window, typed))
        assert refused.status_code == 422 and says in refused.text, (window, len(typed), refused.text[:800])
        assert 'class="alert alert-error"' in refused.text
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert (policy["refund_window_days"], policy["excluded_categories"]) == (21, categories), "nothing was saved"
