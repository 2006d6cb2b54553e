"""Team accounts through the dashboard's forms: roles enforced by the server, removal and resets take effect at
once (even while the invite is being accepted), the last owner stays, and a reset says nothing about whether an
address has an account."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from refundflow_intake.dashboard.auth import SESSION_COOKIE
from refundflow_shared.secret_box import SecretBox
from tests.support.dashboard_people import (
    PASSWORD,
    Person,
    accept_invite,
    browser,
    csrf_of,
    invite,
    merchant_with_owner,
    sign_in,
)
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_roles_are_enforced_by_the_server_whatever_the_page_shows(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    viewer = await invite(intake, owner, "viewer")
    approver = await invite(intake, owner, "approver")
    refund = await intake.refund(merchant, (await intake.payment(merchant))["id"])
    page = f"/dashboard/refunds/{refund['id']}"

    owner_only = {
        "/dashboard/refund-policy": {"refund_window_days": "20", "process_time": "3 days"},
        "/dashboard/team/invite": {"email": "x@acme.example", "role": "owner"},
        "/dashboard/settings/api-keys": {"name": "mine"},
        "/dashboard/settings/notifications": {"team_email": "team@acme.example"},
        "/dashboard/webhooks": {"url": "https://example.com/hook", "events": "refund.succeeded"},
    }
    for person in (viewer, approver):
        for action, form in owner_only.items():
            answer = await person.post_form("/dashboard/payments", action, form)
            assert answer.status_code == 403 and "not_allowed_for_role" in answer.text, (person.email, action)
    refused = await viewer.post_form(page, f"{page}/reject", {"note": "no"})
    assert refused.status_code == 403 and "not_allowed_for_role" in refused.text
    assert "Approve refund" not in (await viewer.page(page)).text

    decided = await approver.post_form(page, f"{page}/reject", {"note": "Already used."})
    assert decided.status_code == 303
    after = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (after["status"], after["decision_note"]) == ("rejected", "Already used.")
    assert after["timeline"][-1]["actor_name"] == approver.email
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert policy["refund_window_days"] == 14  # nobody but an owner changed it


async def test_a_removed_member_loses_access_at_once_and_the_last_owner_cannot_go(intake: IntakeUnderTest) -> None:
    _, owner = await merchant_with_owner(intake)
    approver = await invite(intake, owner, "approver")
    team = await owner.page("/dashboard/team")
    [owner_id] = re.findall(r'href="/dashboard/team/(usr_\w+)/remove"', team.text)[:1]
    approver_id = re.findall(r'href="/dashboard/team/(usr_\w+)/remove"', team.text)[1]

    alone = await owner.post_form("/dashboard/team", f"/dashboard/team/{owner_id}/remove", {})
    assert alone.status_code == 409 and "last_owner" in alone.text
    demoted = await owner.post_form("/dashboard/team", f"/dashboard/team/{owner_id}/role", {"role": "viewer"})
    assert demoted.status_code == 409 and "last_owner" in demoted.text

    assert (await approver.page("/dashboard/payments")).status_code == 200
    removed = await owner.post_form("/dashboard/team", f"/dashboard/team/{approver_id}/remove", {})
    assert removed.status_code == 303
    assert (await approver.page("/dashboard/payments")).status_code == 303  # signed out, to the sign-in page
    assert (await sign_in(intake, approver.email)).status_code == 401


async def test_a_password_reset_sets_a_new_password_once_and_signs_out_every_browser(intake: IntakeUnderTest) -> None:
    _, owner = await merchant_with_owner(intake)
    other_browser = await sign_in(intake, owner.email)
    assert other_browser.status_code == 303
    stranger = browser(intake)
    for address in (owner.email, "nobody-here@acme.example"):
        page = await stranger.get("/dashboard/forgot-password")
        asked = await stranger.post(
            "/dashboard/forgot-password", data={"csrf_token": csrf_of(page.text), "email": address}
        )
        assert asked.status_code == 303 and asked.headers["location"] == "/dashboard/login?done=reset_sent"

    [event] = await intake.db.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'password_reset.requested' ORDER BY id DESC LIMIT 1"
    )
    payload = json.loads(bytes(event["payload"]))
    assert payload["email"] == owner.email and "reset-password" not in str(payload)  # the link travels sealed
    key = intake.settings.webhook_secret_key
    assert key is not None
    link = SecretBox(key.get_secret_value()).open(payload["sealed_url"], context=payload["user_id"])
    path = "/" + link.split("/", 3)[3]

    page = await stranger.get(path)
    new = "a brand new passphrase"
    done = await stranger.post(path, data={"csrf_token": csrf_of(page.text), "password": new, "password_again": new})
    assert done.status_code == 303 and SESSION_COOKIE in done.cookies
    assert (await owner.page("/dashboard/payments")).status_code == 303  # the old session ended
    assert (await stranger.get(path)).status_code == 410  # used once
    assert (await sign_in(intake, owner.email, new)).status_code == 303


async def test_an_invited_owner_who_has_not_joined_does_not_count_as_the_owner_that_stays(
    intake: IntakeUnderTest,
) -> None:
    """An invitation may never be accepted (a mistyped address): were it counted, the only owner who can sign in
    could step down, and nobody would be left to manage the team."""
    _, owner = await merchant_with_owner(intake)
    typo = f"typo-{uuid.uuid4().hex[:8]}@acme.example"
    invited = await owner.post_form("/dashboard/team", "/dashboard/team/invite", {"email": typo, "role": "owner"})
    assert invited.status_code == 200 and typo in invited.text
    team = await owner.page("/dashboard/team")
    owner_id, invited_id = re.findall(r'href="/dashboard/team/(usr_\w+)/remove"', team.text)[:2]

    demoted = await owner.post_form("/dashboard/team", f"/dashboard/team/{owner_id}/role", {"role": "viewer"})
    assert demoted.status_code == 409 and "last_owner" in demoted.text
    alone = await owner.post_form("/dashboard/team", f"/dashboard/team/{owner_id}/remove", {})
    assert alone.status_code == 409 and "last_owner" in alone.text

    withdrawn = await owner.post_form("/dashboard/team", f"/dashboard/team/{invited_id}/remove", {})
    assert withdrawn.status_code == 303, "the invitation itself can go: the owner who joined stays"
    assert (await owner.page("/dashboard/team")).status_code == 200


async def _signed_in_again(intake: IntakeUnderTest, email: str) -> Person:
    """The person signs in afresh (a session lasts hours; these tests move the clock by days)."""
    person = Person(email=email, browser=browser(intake))
    page = await person.browser.get("/dashboard/login")
    answer = await person.browser.post(
        "/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text[:500]
    return person


async def test_resending_an_invite_never_keeps_the_address_past_the_invitations_seven_days(
    intake: IntakeUnderTest,
) -> None:
    """A resend issues a fresh link: were each to last 72 hours more, a hostile merchant resending every 3 days would
    keep the address from every other merchant for ever. The invitation ends 7 days after the first invite."""
    _, mallory = await merchant_with_owner(intake)
    victim = f"victim-{uuid.uuid4().hex[:8]}@corp.example"
    invited = await mallory.post_form("/dashboard/team", "/dashboard/team/invite", {"email": victim, "role": "viewer"})
    assert invited.status_code == 200, invited.text[:500]
    member_id = await intake.db.fetchval(
        "SELECT id FROM merchant_users WHERE email = $1 AND removed_at IS NULL", victim
    )
    moved = timedelta()
    try:
        for hours in (70, 70):  # each resend comes before the link it replaces lapsed
            intake.clock.advance(timedelta(hours=hours))
            moved += timedelta(hours=hours)
            mallory = await _signed_in_again(intake, mallory.email)
            resent = await mallory.post_form("/dashboard/team", f"/dashboard/team/{member_id}/resend", {})
            assert resent.status_code == 200 and 'id="invite-url"' in resent.text, resent.text[:500]
        # Sent at 140 h, the last link stops at the invitation's end, 168 h, not 212 h; the page says so.
        assert "a resend does not extend it" in resent.text

        intake.clock.advance(timedelta(hours=28, minutes=1))
        moved += timedelta(hours=28, minutes=1)
        mallory = await _signed_in_again(intake, mallory.email)
        too_late = await mallory.post_form("/dashboard/team", f"/dashboard/team/{member_id}/resend", {})
        assert too_late.status_code == 409 and "invitation_ended" in too_late.text, too_late.text[:500]
        employer = await intake.client.post(
            "/v1/merchants", json={"name": "Corp", "owner_email": victim}, headers=ADMIN
        )
        assert employer.status_code == 201, employer.text
    finally:
        intake.clock.advance(-moved)


async def test_an_invitation_nobody_accepted_stops_holding_the_address_once_its_link_lapsed(
    intake: IntakeUnderTest,
) -> None:
    """Any merchant may invite any address: were an invitation never accepted to keep it for ever, one that typed it
    (or a hostile one) would keep its owner from being invited by their real employer, or made a merchant's owner."""
    _, owner = await merchant_with_owner(intake)
    bob, carol = (f"{name}-{uuid.uuid4().hex[:8]}@corp.example" for name in ("bob", "carol"))
    for address in (bob, carol):
        invited = await owner.post_form(
            "/dashboard/team", "/dashboard/team/invite", {"email": address, "role": "viewer"}
        )
        assert invited.status_code == 200, invited.text[:500]

    while_open = await intake.client.post("/v1/merchants", json={"name": "Corp", "owner_email": bob}, headers=ADMIN)
    assert while_open.status_code == 409 and while_open.json()["error"]["code"] == "email_already_registered"
    assert "account" not in while_open.json()["error"]["message"], "nobody joined: there is no account to claim"
    joined = await intake.client.post("/v1/merchants", json={"name": "Corp", "owner_email": owner.email}, headers=ADMIN)
    assert joined.status_code == 409 and "already has a Refundflow dashboard account" in joined.text

    lapsed = timedelta(hours=72, minutes=1)
    intake.clock.advance(lapsed)
    try:
        made_owner = await intake.client.post("/v1/merchants", json={"name": "Corp", "owner_email": bob}, headers=ADMIN)
        assert made_owner.status_code == 201, made_owner.text
        _, employer = await merchant_with_owner(intake)  # signed in after the lapse: sessions last hours, not days
        invited = await employer.post_form(
            "/dashboard/team", "/dashboard/team/invite", {"email": carol, "role": "viewer"}
        )
        assert invited.status_code == 200, invited.text[:500]
    finally:
        intake.clock.advance(-lapsed)
    live = await intake.db.fetch(
        "SELECT m.name FROM merchant_users u JOIN merchants m ON m.id = u.merchant_id"
        " WHERE lower(u.email) = ANY($1::text[]) AND u.removed_at IS NULL",
        [bob, carol],
    )
    assert sorted(r["name"] for r in live) == ["Acme", "Corp"], "each address is held by its new invitation only"


async def test_one_address_invited_by_two_merchants_at_once_is_one_invitation_and_one_409(
    intake: IntakeUnderTest,
) -> None:
    """Both may find the address free before either has written its invitation: the second to write is told as if it
    had come second, never a 500."""
    _, first = await merchant_with_owner(intake)
    _, second = await merchant_with_owner(intake)
    for _ in range(5):
        address = f"wanted-{uuid.uuid4().hex[:8]}@corp.example"
        form = {"email": address, "role": "viewer"}
        answers = await asyncio.gather(
            first.post_form("/dashboard/team", "/dashboard/team/invite", form),
            second.post_form("/dashboard/team", "/dashboard/team/invite", form),
            intake.client.post("/v1/merchants", json={"name": "Corp", "owner_email": address}, headers=ADMIN),
        )
        assert sorted(a.status_code for a in answers) in ([200, 409, 409], [201, 409, 409]), [
            a.text[:300] for a in answers
        ]
        assert all("email_already_registered" in a.text for a in answers if a.status_code == 409)
        held = await intake.db.fetchval(
            "SELECT count(*) FROM merchant_users WHERE lower(email) = $1 AND removed_at IS NULL", address
        )
        assert held == 1


async def test_an_invite_accepted_while_its_member_is_removed_is_refused_with_a_page_not_a_deadlock(
    intake: IntakeUnderTest,
) -> None:
    """Accepting used the link, then wrote the member; removing wrote the member, then revoked its links: each waited
    for the other, and PostgreSQL aborted one of them (a 500). The test holds the member's row so that the removal
    waits first and the acceptance second, the interleaving that deadlocked."""
    _, owner = await merchant_with_owner(intake)
    email = f"leaving-{uuid.uuid4().hex[:8]}@acme.example"
    invited = await owner.post_form("/dashboard/team", "/dashboard/team/invite", {"email": email, "role": "viewer"})
    found = re.search(r'<code id="invite-url">[^<]*(/dashboard/invite/[^<]+)</code>', invited.text)
    assert found, invited.text[:500]
    invite_path = found.group(1)
    member_id = await intake.db.fetchval("SELECT id FROM merchant_users WHERE email = $1", email)
    team = await owner.page("/dashboard/team")
    invitee = browser(intake)
    invite_page = await invitee.get(invite_path)
    form = {"csrf_token": csrf_of(invite_page.text), "password": PASSWORD, "password_again": PASSWORD}

    async def waiting_for_the_member(count: int) -> bool:
        waiting = await intake.db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(waiting >= count)

    async with intake.db.acquire() as holder, holder.transaction():
        await holder.execute("SELECT id FROM merchant_users WHERE id = $1 FOR UPDATE", member_id)
        removing = asyncio.create_task(
            owner.browser.post(f"/dashboard/team/{member_id}/remove", data={"csrf_token": csrf_of(team.text)})
        )
        await eventually(lambda: waiting_for_the_member(1), timeout=30)
        accepting = asyncio.create_task(invitee.post(invite_path, data=form))
        await eventually(lambda: waiting_for_the_member(2), timeout=30)
    removed, accepted = await asyncio.gather(removing, accepting)

    assert removed.status_code == 303 and removed.headers["location"] == "/dashboard/team?done=removed"
    assert accepted.status_code == 410 and "ask for a new one" in accepted.text, accepted.text[:500]
    assert SESSION_COOKIE not in accepted.cookies
    assert (await sign_in(intake, email)).status_code == 401


def _invite_url(page: str) -> str:
    found = re.search(r'<code id="invite-url">([^<]+)</code>', page)
    assert found, page[:500]
    return found.group(1)


@pytest.mark.parametrize("how", ["removed", "demoted_to_approver"])
async def test_the_invitations_a_member_sent_end_when_they_can_no_longer_invite(
    intake: IntakeUnderTest, how: str
) -> None:
    """The inviter sees the link: an owner removed (or demoted) kept the invitations they sent, and came back as an
    owner through an address of their own, with the link they had copied."""
    _, alice = await merchant_with_owner(intake)
    mallory = await invite(intake, alice, "owner")
    spare, colleague, kept = (f"{n}-{uuid.uuid4().hex[:8]}@elsewhere.example" for n in ("spare", "colleague", "kept"))
    sent = await mallory.post_form("/dashboard/team", "/dashboard/team/invite", {"email": spare, "role": "owner"})
    mallorys = _invite_url(sent.text)
    await alice.post_form("/dashboard/team", "/dashboard/team/invite", {"email": colleague, "role": "viewer"})
    colleague_id = await intake.db.fetchval("SELECT id FROM merchant_users WHERE email = $1", colleague)
    resent = await mallory.post_form("/dashboard/team", f"/dashboard/team/{colleague_id}/resend", {})
    resent_by_mallory = _invite_url(resent.text)  # Alice's invitation, its link now the one Mallory saw
    alices = _invite_url(
        (await alice.post_form("/dashboard/team", "/dashboard/team/invite", {"email": kept, "role": "viewer"})).text
    )

    mallory_id = await intake.db.fetchval("SELECT id FROM merchant_users WHERE email = $1", mallory.email)
    action, form = ("remove", {}) if how == "removed" else ("role", {"role": "approver"})
    changed = await alice.post_form("/dashboard/team", f"/dashboard/team/{mallory_id}/{action}", form)
    assert changed.status_code == 303, changed.text[:500]

    for url in (mallorys, resent_by_mallory):
        opened = await browser(intake).get("/" + url.split("://", 1)[1].split("/", 1)[1])
        assert opened.status_code == 410, (url, opened.status_code)
    team = (await alice.page("/dashboard/team")).text
    assert spare not in team and colleague not in team, "the invitations she sent are gone from the team"
    assert kept in team
    await accept_invite(intake, alices, kept)  # Alice's own invitations still hold
    again = await alice.post_form("/dashboard/team", "/dashboard/team/invite", {"email": spare, "role": "viewer"})
    assert again.status_code == 200, "the address is free again"
