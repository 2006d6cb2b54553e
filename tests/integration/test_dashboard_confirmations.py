"""What cannot be undone is asked first: revoking an API key, deleting a webhook endpoint, removing a team member or
a product's own rules. The table's button leads to a page of its own that says what will happen, with the button
that does it (the same form, CSRF token and handler as before) and a way back; asking changes nothing. The team's
is walked with the keyboard in tests/browser/test_dashboard_pages.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import escape, unescape

import pytest

from tests.support.dashboard_people import invite, merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_each_irreversible_action_is_asked_on_a_page_of_its_own_and_done_only_from_there(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake, overrides={"prod_gift": {"refund_window_days": 30}})
    made = await owner.post_form("/dashboard/settings", "/dashboard/settings/api-keys", {"name": "billing backend"})
    found = re.search(r'billing backend<br><span class="muted small mono">(key_[^<]+)</span>', made.text)
    assert made.status_code == 200 and found, made.text[:500]
    key_id = found.group(1)
    hook = {"url": "http://127.0.0.1:9/acme/hooks", "events": ["refund.succeeded"]}
    created = await intake.client.post("/v1/webhook-endpoints", headers=merchant, json=hook)
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    member = await invite(intake, owner, "approver")
    team = (await owner.page("/dashboard/team")).text
    member_id = re.search(rf'for="role-([^"]+)">Role of {re.escape(member.email)}<', team)
    assert member_id
    keys_before = (await intake.client.get("/v1/api-keys", headers=merchant)).json()

    for table, confirm, action, question, hidden in (
        (
            "/dashboard/settings",
            f"/dashboard/settings/api-keys/{key_id}/revoke",
            f"/dashboard/settings/api-keys/{key_id}/revoke",
            "Revoke the API key “billing backend”?",
            {},
        ),
        (
            f"/dashboard/webhooks/{endpoint_id}",
            f"/dashboard/webhooks/{endpoint_id}/delete",
            f"/dashboard/webhooks/{endpoint_id}/delete",
            "Delete the webhook endpoint http://127.0.0.1:9/acme/hooks?",
            {},
        ),
        (
            "/dashboard/team",
            f"/dashboard/team/{member_id.group(1)}/remove",
            f"/dashboard/team/{member_id.group(1)}/remove",
            f"Remove {member.email} from Acme?",
            {},
        ),
        (
            "/dashboard/refund-policy",
            "/dashboard/refund-policy/overrides/delete?product_id=prod_gift",
            "/dashboard/refund-policy/overrides/delete",
            "Remove the override for product prod_gift?",
            {"product_id": "prod_gift"},
        ),
    ):
        listed = await owner.page(table)
        assert f'href="{escape(confirm)}"' in listed.text, table  # a link to the question
        assert f'action="{action}"' not in listed.text, table  # not a form that does it at once
        asked = await owner.page(confirm)
        assert asked.status_code == 200, asked.text[:500]
        assert question in unescape(asked.text), unescape(asked.text)[:1500]
        assert f'action="{action}"' in asked.text and f'href="{table}"' in asked.text  # do it, or keep it
        for name, value in hidden.items():
            assert f'name="{name}" value="{value}"' in asked.text

    # Asking changed nothing; the question's form does it.
    assert (await intake.client.get("/v1/api-keys", headers=merchant)).json() == keys_before
    assert (await intake.client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=merchant)).status_code == 200
    assert member.email in (await owner.page("/dashboard/team")).text
    assert "prod_gift" in (await owner.page("/dashboard/refund-policy")).text
    done = await owner.post_form(
        "/dashboard/refund-policy/overrides/delete?product_id=prod_gift",
        "/dashboard/refund-policy/overrides/delete",
        {"product_id": "prod_gift"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/dashboard/refund-policy?done=removed"


async def test_a_question_about_what_is_not_the_merchants_is_a_404_and_a_viewer_is_not_asked(
    intake: IntakeUnderTest,
) -> None:
    _, owner = await merchant_with_owner(intake)
    for path in (
        "/dashboard/settings/api-keys/key_nope/revoke",
        "/dashboard/webhooks/we_nope/delete",
        "/dashboard/team/usr_nope/remove",
        "/dashboard/refund-policy/overrides/delete?product_id=prod_nope",
    ):
        assert (await owner.page(path)).status_code == 404, path
    viewer = await invite(intake, owner, "viewer")
    assert (await viewer.page("/dashboard/refund-policy/overrides/delete?product_id=x")).status_code == 403
