"""The dashboard's doors: CSRF on every form, no session fixation, one-time links used once, login throttling, and
invitations throttled (each emails an address an owner typed)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from argon2 import PasswordHasher

from refundflow_intake.dashboard.auth import SESSION_COOKIE
from tests.support.dashboard_people import PASSWORD, accept_invite, browser, csrf_of, merchant_with_owner, sign_in
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(
        postgres_url,
        kafka_bootstrap,
        dashboard_cookie_secure=False,
        login_attempts_per_account=3,
        team_invites_per_hour=3,
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def strict_intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    """Two sign-in attempts per client address (per 15 minutes)."""
    async with running_intake(postgres_url, kafka_bootstrap, login_attempts_per_ip=2) as running:
        yield running


async def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.payment(merchant)
    refund = await intake.refund(merchant, payment["id"])
    approve = f"/dashboard/refunds/{refund['id']}/approve"

    missing = await owner.browser.post(approve, data={"note": "no token"})
    wrong = await owner.browser.post(approve, data={"csrf_token": "x" * 43, "note": "forged"})
    _, other_owner = await merchant_with_owner(intake)
    page = await other_owner.page("/dashboard/payments")
    anothers = await owner.browser.post(approve, data={"csrf_token": csrf_of(page.text)})  # valid, but not theirs

    for answer in (missing, wrong, anothers):
        assert answer.status_code == 403, answer.text[:300]
        assert "csrf_token_invalid" in answer.text
    after = await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)
    assert after.json()["status"] == "pending"
    assert [t["action"] for t in after.json()["timeline"]] == ["requested"]

    signed_out = browser(intake)  # the sign-in form is protected too (login CSRF)
    forged_login = await signed_out.post("/dashboard/login", data={"email": owner.email, "password": PASSWORD})
    assert forged_login.status_code == 403 and SESSION_COOKIE not in forged_login.cookies


async def test_signing_in_never_keeps_a_session_id_the_browser_brought(intake: IntakeUnderTest) -> None:
    _, owner = await merchant_with_owner(intake)
    planted = "attacker-chosen-session-id-0123456789"
    victim = browser(intake)
    victim.cookies.set(SESSION_COOKIE, planted, domain="intake", path="/dashboard")
    page = await victim.get("/dashboard/login")
    signed = await victim.post(
        "/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": owner.email, "password": PASSWORD}
    )
    assert signed.status_code == 303
    issued = signed.cookies[SESSION_COOKIE]
    assert issued != planted
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")

    attacker = browser(intake)
    attacker.cookies.set(SESSION_COOKIE, planted, domain="intake", path="/dashboard")
    assert (await attacker.get("/dashboard/payments")).status_code == 303  # to the sign-in page
    first = owner.browser.cookies[SESSION_COOKIE]
    again = await sign_in(intake, owner.email)
    assert again.cookies[SESSION_COOKIE] not in (first, issued)


async def test_an_invite_link_works_once_so_a_stolen_copy_is_refused(intake: IntakeUnderTest) -> None:
    created = await intake.client.post(
        "/v1/merchants", json={"name": "Acme", "owner_email": "first-owner@acme.example"}, headers=ADMIN
    )
    link = created.json()["owner_invite_url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/dashboard/invite/[\w-]{40,}", link)
    await accept_invite(intake, link, "first-owner@acme.example")

    thief = browser(intake)
    path = "/" + link.split("/", 3)[3]
    page = await thief.get(path)
    assert page.status_code == 410 and "cannot be used" in page.text
    login = await thief.get("/dashboard/login")
    stolen = "thief's password!"
    reuse = await thief.post(
        path, data={"csrf_token": csrf_of(login.text), "password": stolen, "password_again": stolen}
    )
    assert reuse.status_code == 410 and SESSION_COOKIE not in reuse.cookies
    assert (await sign_in(intake, "first-owner@acme.example", stolen)).status_code == 401
    assert (await sign_in(intake, "first-owner@acme.example")).status_code == 303


async def test_an_invite_expires_after_72_hours(intake: IntakeUnderTest) -> None:
    created = await intake.client.post(
        "/v1/merchants", json={"name": "Acme", "owner_email": "late-owner@acme.example"}, headers=ADMIN
    )
    path = "/" + created.json()["owner_invite_url"].split("/", 3)[3]
    intake.clock.advance(timedelta(hours=72, minutes=1))
    try:
        assert (await browser(intake).get(path)).status_code == 410
    finally:
        intake.clock.advance(-timedelta(hours=72, minutes=1))


async def test_sign_in_is_throttled_per_account_and_address_even_with_the_right_password(
    intake: IntakeUnderTest,
) -> None:
    _, owner = await merchant_with_owner(intake)
    wrong = [await sign_in(intake, owner.email, "not the password") for _ in range(3)]
    assert [w.status_code for w in wrong] == [401, 401, 401]
    throttled = await sign_in(intake, owner.email)  # the 4th attempt within 15 minutes from there, this time right
    assert throttled.status_code == 429 and "try again in" in throttled.text
    assert SESSION_COOKIE not in throttled.cookies
    other = await sign_in(intake, "someone-else@acme.example", "whatever they type")
    assert other.status_code == 401  # another account is not throttled by this one
    # Someone else's failures from another address do not lock the owner out: the right password still signs in.
    elsewhere = await sign_in(intake, owner.email, address="198.51.100.7")
    assert elsewhere.status_code == 303 and SESSION_COOKIE in elsewhere.cookies


async def test_an_account_has_a_backstop_of_ten_times_its_limit_from_all_addresses_together(
    intake: IntakeUnderTest,
) -> None:
    """Many addresses guessing one account's password are still bounded: 3 per address, 30 from all of them."""
    _, owner = await merchant_with_owner(intake)
    guesses = [
        await sign_in(intake, owner.email, "not the password", address=f"192.0.2.{n}")
        for n in range(10)
        for _ in range(3)
    ]
    assert {g.status_code for g in guesses} == {401}
    refused = await sign_in(intake, owner.email, address="192.0.2.200")
    assert refused.status_code == 429 and SESSION_COOKIE not in refused.cookies


async def test_a_client_refused_by_its_address_limit_spends_no_accounts_budget(
    strict_intake: IntakeUnderTest,
) -> None:
    """One address over its own limit kept counting attempts against any account it named, until the owner's right
    password was refused too."""
    _, owner = await merchant_with_owner(strict_intake)
    attacker = "203.0.113.9"
    spent = [await sign_in(strict_intake, f"x{n}@nobody.example", "wrong", address=attacker) for n in range(2)]
    assert [a.status_code for a in spent] == [401, 401]
    refused = [await sign_in(strict_intake, owner.email, "wrong", address=attacker) for _ in range(12)]
    assert {a.status_code for a in refused} == {429}
    owner_signs_in = await sign_in(strict_intake, owner.email, address="198.51.100.77")
    assert owner_signs_in.status_code == 303 and SESSION_COOKIE in owner_signs_in.cookies


async def test_others_asking_for_a_victims_reset_do_not_spend_the_victims_own_resets(
    strict_intake: IntakeUnderTest,
) -> None:
    """A throttled reset answers "sent" and sends nothing: spent from anywhere, the victim could not recover."""
    merchant, owner = await merchant_with_owner(strict_intake)
    merchant_id = await strict_intake.merchant_id(merchant)

    async def ask_for_reset(address: str) -> None:
        person = browser(strict_intake, address=address)
        page = await person.get("/dashboard/forgot-password")
        asked = await person.post(
            "/dashboard/forgot-password", data={"csrf_token": csrf_of(page.text), "email": owner.email}
        )
        assert asked.status_code == 303 and asked.headers["location"].endswith("done=reset_sent")

    for _ in range(8):  # past the 5 an hour one address may ask for
        await ask_for_reset("203.0.113.10")
    assert len(await strict_intake.staged("password_reset.requested", merchant_id)) == 5
    await ask_for_reset("198.51.100.78")  # the owner, from their own address
    assert len(await strict_intake.staged("password_reset.requested", merchant_id)) == 6


async def test_resets_asked_from_many_addresses_mail_one_account_at_most_twice_its_limit_an_hour(
    strict_intake: IntakeUnderTest,
) -> None:
    """Each reset is an email to the account's owner: at sign-in's ten times the limit from all addresses, ten
    addresses could mail them 50 an hour."""
    merchant, owner = await merchant_with_owner(strict_intake)
    merchant_id = await strict_intake.merchant_id(merchant)
    for n in range(6):
        person = browser(strict_intake, address=f"192.0.2.{n + 20}")
        for _ in range(5):  # each address within its own 5 an hour
            page = await person.get("/dashboard/forgot-password")
            asked = await person.post(
                "/dashboard/forgot-password", data={"csrf_token": csrf_of(page.text), "email": owner.email}
            )
            assert asked.status_code == 303
    assert len(await strict_intake.staged("password_reset.requested", merchant_id)) == 10


async def test_invites_and_resends_are_limited_per_merchant_so_an_owner_cannot_mail_anyone_at_will(
    intake: IntakeUnderTest,
) -> None:
    """Each sends an email in Refundflow's name to whatever address an owner typed."""
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    emailed = len(await intake.staged("team_member.invited", merchant_id))  # the owner's own invitation

    def someone() -> dict[str, str]:
        return {"email": f"someone-{uuid.uuid4().hex[:8]}@elsewhere.example", "role": "viewer"}

    invited = await owner.post_form("/dashboard/team", "/dashboard/team/invite", someone())
    assert invited.status_code == 200, invited.text[:300]
    [member_id] = re.findall(r'action="/dashboard/team/(usr_\w+)/resend"', invited.text)
    resend = f"/dashboard/team/{member_id}/resend"
    resends = [await owner.post_form("/dashboard/team", resend, {}) for _ in range(3)]
    assert [r.status_code for r in resends] == [200, 200, 429]
    assert "rate_limited" in resends[-1].text and "try again in" in resends[-1].text
    another = await owner.post_form("/dashboard/team", "/dashboard/team/invite", someone())
    assert another.status_code == 429 and "invite-url" not in another.text
    assert len(await intake.staged("team_member.invited", merchant_id)) == emailed + 3

    _, other_owner = await merchant_with_owner(intake)  # another merchant's invitations are its own
    elsewhere = await other_owner.post_form("/dashboard/team", "/dashboard/team/invite", someone())
    assert elsewhere.status_code == 200


async def test_sign_in_attempts_hash_off_the_event_loop_so_the_api_keeps_answering(intake: IntakeUnderTest) -> None:
    """Each attempt checks an Argon2id hash (~100 ms of CPU, 64 MiB), an unknown address a dummy one: on the event
    loop, 20 attempts at once froze every request (and consumer) of the process for seconds."""
    merchant, _ = await merchant_with_owner(intake)
    people = [browser(intake, address=f"198.51.100.{n}") for n in range(20)]  # under each address's throttle
    tokens = [csrf_of((await person.get("/dashboard/login")).text) for person in people]
    attempts = asyncio.gather(
        *(
            person.post(
                "/dashboard/login",
                data={
                    "csrf_token": token,
                    "email": f"nobody-{uuid.uuid4().hex[:8]}@acme.example",
                    "password": "x" * 12,
                },
            )
            for person, token in zip(people, tokens, strict=True)
        )
    )
    waits: list[float] = []
    while not attempts.done():
        started = time.perf_counter()
        balance = await intake.client.get("/v1/balance", headers=merchant)
        waits.append(time.perf_counter() - started)
        assert balance.status_code == 200
        await asyncio.sleep(0.02)
    assert [a.status_code for a in await attempts] == [401] * 20
    assert len(waits) > 1 and max(waits) < 1.0, waits


async def test_sign_in_is_throttled_per_ipv6_64_block_as_one_client(strict_intake: IntakeUnderTest) -> None:
    """A /64 is what one IPv6 subscriber gets: counted per address, each of its 2**64 addresses had a budget."""
    same_block = ["2001:db8:7:1::1", "2001:db8:7:1:ffff::2", "2001:db8:7:1::3"]
    answers = [
        await sign_in(strict_intake, f"a{n}@acme.example", "wrong password", address=a)
        for n, a in enumerate(same_block)
    ]
    assert [a.status_code for a in answers] == [401, 401, 429]
    next_block = await sign_in(strict_intake, "b@acme.example", "wrong password", address="2001:db8:7:2::1")
    assert next_block.status_code == 401
    mapped = [
        await sign_in(strict_intake, f"c{n}@acme.example", "wrong password", address=a)
        for n, a in enumerate(["192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7"])
    ]
    assert [a.status_code for a in mapped] == [401, 401, 429]  # an IPv4 address, however it is written


async def test_a_password_reset_while_a_sign_in_checks_the_old_password_wins(intake: IntakeUnderTest) -> None:
    """The hash is checked with no transaction open, so the account can change meanwhile: the sign-in starts a
    session only if the password checked is still the account's."""
    _, owner = await merchant_with_owner(intake)
    async with intake.db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM merchant_users WHERE email = $1 FOR UPDATE", owner.email)
        signing_in = asyncio.ensure_future(sign_in(intake, owner.email))  # the old password, still right
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        while not await intake.db.fetchval(waiting):  # the sign-in, done hashing, waits for the row
            assert not signing_in.done(), signing_in.result().text[:300]
            await asyncio.sleep(0.02)
        reset = PasswordHasher().hash("a new password, after a reset")
        await conn.execute("UPDATE merchant_users SET password_hash = $2 WHERE email = $1", owner.email, reset)
    answer = await signing_in
    assert answer.status_code == 401 and SESSION_COOKIE not in answer.cookies
    assert (await sign_in(intake, owner.email, "a new password, after a reset")).status_code == 303


async def test_two_sign_ins_at_once_on_a_hash_due_for_a_rehash_both_start_a_session(intake: IntakeUnderTest) -> None:
    """Both check the old hash and rehash it; one's rehash lands first and the other's then matches nothing: the
    hash changed, but to one of the same password, so the other is still verified (a reset is not: see above)."""
    _, owner = await merchant_with_owner(intake)
    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    await intake.db.execute("UPDATE merchant_users SET password_hash = $2 WHERE email = $1", owner.email, weaker)
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    async with intake.db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM merchant_users WHERE email = $1 FOR UPDATE", owner.email)
        signing_in = [asyncio.ensure_future(sign_in(intake, owner.email)) for _ in range(2)]
        while await intake.db.fetchval(waiting) < 2:  # both checked the old hash; both rehashes wait for the row
            assert not any(s.done() for s in signing_in), [s.result().text[:300] for s in signing_in if s.done()]
            await asyncio.sleep(0.02)
    answers = await asyncio.gather(*signing_in)
    assert [a.status_code for a in answers] == [303, 303], [a.text[:300] for a in answers]
    assert all(SESSION_COOKIE in a.cookies for a in answers)
    stored = await intake.db.fetchval("SELECT password_hash FROM merchant_users WHERE email = $1", owner.email)
    assert stored != weaker and PasswordHasher().verify(stored, PASSWORD)


DOTTED_CAPITAL_I = "\u0130"  # İ: Python lowercases it to i and a combining dot, PostgreSQL to a plain i


async def test_an_address_written_with_a_dotted_capital_i_counts_against_the_same_accounts_budget(
    intake: IntakeUnderTest,
) -> None:
    """The budget was keyed on Python's lowercase and the account found by PostgreSQL's: each İ for an i was a fresh
    budget that reached the same account, so a guesser had three tries per variant of the address."""
    email = f"billing-{uuid.uuid4().hex[:8]}@acme.example"
    created = await intake.client.post("/v1/merchants", json={"name": "Acme", "owner_email": email}, headers=ADMIN)
    assert created.status_code == 201, created.text
    await accept_invite(intake, created.json()["owner_invite_url"], email)
    assert [(await sign_in(intake, email, "not the password")).status_code for _ in range(3)] == [401] * 3

    for variant in (email.replace("i", DOTTED_CAPITAL_I, 1), email.replace("i", DOTTED_CAPITAL_I).upper()):
        answer = await sign_in(intake, variant)  # the right password: still the spent budget of the account
        assert answer.status_code == 429 and SESSION_COOKIE not in answer.cookies, (variant, answer.status_code)
    assert (await sign_in(intake, email)).status_code == 429


async def test_an_account_address_is_plain_ascii_so_a_look_alike_cannot_hold_the_real_one(
    intake: IntakeUnderTest,
) -> None:
    """PostgreSQL matches addresses by its lowercase, in which İ is i: a merchant invited the look-alike
    bİlling@victim.example, accepted it, and the real billing@victim.example could no longer be made an owner."""
    merchant, owner = await merchant_with_owner(intake)
    real = f"billing-{uuid.uuid4().hex[:8]}@victim.example"
    look_alike = real.replace("i", DOTTED_CAPITAL_I, 1)
    invited = await owner.post_form(
        "/dashboard/team", "/dashboard/team/invite", {"email": look_alike, "role": "viewer"}
    )
    assert invited.status_code == 422 and "plain ASCII" in invited.text, invited.text[:500]
    as_owner = await intake.client.post(
        "/v1/merchants", json={"name": "Victim", "owner_email": look_alike}, headers=ADMIN
    )
    assert as_owner.status_code == 422 and as_owner.json()["error"]["code"] == "invalid_request"
    made = await intake.client.post("/v1/merchants", json={"name": "Victim", "owner_email": real}, headers=ADMIN)
    assert made.status_code == 201, made.text

    # An account made before the rule keeps its address: it still signs in, and may ask for a reset.
    earlier = f"j\u00fcrgen-{uuid.uuid4().hex[:8]}@acme.example"
    await intake.db.execute("UPDATE merchant_users SET email = $2 WHERE email = $1", owner.email, earlier)
    assert (await sign_in(intake, earlier)).status_code == 303
    stranger = browser(intake)
    page = await stranger.get("/dashboard/forgot-password")
    asked = await stranger.post("/dashboard/forgot-password", data={"csrf_token": csrf_of(page.text), "email": earlier})
    assert asked.status_code == 303
    # A customer's address is theirs to write: payments take it as the customer gave it.
    customer = await intake.payment(merchant, customer_email="j\u00fcrgen@b\u00fccher.example")
    assert customer["customer_email"].startswith("j\u00fcrgen@")


async def test_an_address_postgresql_cannot_hold_is_refused_as_such_not_a_500(intake: IntakeUnderTest) -> None:
    """Sign-in and reset read the address with PostgreSQL (the throttle's key too), which holds no NUL character."""
    refused = await sign_in(intake, "owner\x00@acme.example")
    assert refused.status_code == 422, refused.text[:300]
    stranger = browser(intake)
    page = await stranger.get("/dashboard/forgot-password")
    asked = await stranger.post(
        "/dashboard/forgot-password", data={"csrf_token": csrf_of(page.text), "email": "owner\x00@acme.example"}
    )
    assert asked.status_code == 422
