"""The edges strangers reach: portal tokens, what the portal shows, the public policy, commands that come early."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from refundflow_intake.awaited_events import Awaits
from refundflow_intake.public_policy_cache import PublicPolicyCache
from refundflow_intake.refund_commands import submit_refund
from refundflow_shared.events import Event, RefundSubmit
from tests.support.dashboard_people import browser
from tests.support.intake_harness import ADMIN, Headers, IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap, public_policy_max_age_seconds=60) as running:
        yield running


@pytest.fixture(scope="module")
async def strict_intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    """Two portal submissions per client address (per hour)."""
    async with running_intake(postgres_url, kafka_bootstrap, portal_submissions_per_ip_per_hour=2) as running:
        yield running


async def portal_for(intake: IntakeUnderTest, merchant: Headers, payment_id: str) -> Headers:
    response = await intake.client.post(f"/v1/payments/{payment_id}/portal-token", headers=merchant)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_a_bearer_that_is_not_ascii_is_a_401_not_a_500(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    token = (await portal_for(intake, merchant, payment["id"]))["Authorization"].removeprefix("Bearer ")
    for value in (f"Bearer {token[:-1]}".encode() + "é".encode(), b"Bearer pt_a.\xc3\xa9", b"Bearer \xff\xfe"):
        headers = {b"Authorization": value}
        portal = await intake.client.post("/v1/portal/refund-requests", headers=headers, json={"reason": "duplicate"})
        merchant_api = await intake.client.get("/v1/payments", headers=headers)
        admin_api = await intake.client.post("/v1/merchants", headers=headers, json={"name": "x"})
        assert (portal.status_code, merchant_api.status_code, admin_api.status_code) == (401, 401, 401), value


async def test_the_portal_shows_only_the_customers_own_requests_and_only_the_note_meant_for_them(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = await portal_for(intake, merchant, payment["id"])
    internal = await intake.refund(
        merchant, payment["id"], amount=100, reason="fraudulent", reason_details="suspected fraud ring"
    )
    hidden = await intake.client.get(f"/v1/portal/refund-requests/{internal['id']}", headers=customer)
    assert hidden.status_code == 404 and "fraud" not in hidden.text

    asked = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "technical_issue", "amount": 1_000}
    )
    assert asked.status_code == 201, asked.text
    await intake.client.post(
        f"/v1/refunds/{asked.json()['id']}/approve", headers=merchant, json={"note": "VIP, do not argue"}
    )
    tracked = (await intake.client.get(f"/v1/portal/refund-requests/{asked.json()['id']}", headers=customer)).json()
    assert (tracked["status"], tracked["note"]) == ("processing", None)

    again = await intake.client.post(
        "/v1/portal/refund-requests", headers=customer, json={"reason": "duplicate", "amount": 500}
    )
    await intake.client.post(
        f"/v1/refunds/{again.json()['id']}/reject", headers=merchant, json={"note": "Charged only once."}
    )
    rejected = (await intake.client.get(f"/v1/portal/refund-requests/{again.json()['id']}", headers=customer)).json()
    assert (rejected["status"], rejected["note"]) == ("rejected", "Charged only once.")


async def test_the_public_policy_is_cached_with_an_etag_and_not_read_on_every_call(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    public = f"/v1/public/merchants/{merchant_id}/refund-policy"
    first = await intake.client.get(public)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "public, max-age=60"
    etag = first.headers["ETag"]

    # Changed behind the API's back: within max-age the answer comes from memory, not the database.
    await intake.db.execute(
        "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ($1, '', '{\"refund_window_days\": 30}')",
        merchant_id,
    )
    cached = await intake.client.get(public)
    assert (cached.json()["refund_window_days"], cached.headers["ETag"]) == (14, etag)
    not_modified = await intake.client.get(public, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""

    intake.clock.advance(timedelta(seconds=61))
    try:
        fresh = await intake.client.get(public)
    finally:
        intake.clock.advance(-timedelta(seconds=61))
    assert fresh.json()["refund_window_days"] == 30 and fresh.headers["ETag"] != etag

    # The merchant's own change through the API shows at once.
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 21})
    assert (await intake.client.get(public)).json()["refund_window_days"] == 21
    unknown = await intake.client.get("/v1/public/merchants/mer_nobody/refund-policy")
    assert unknown.status_code == 404


async def test_a_storefronts_cache_buster_on_the_public_policy_is_ignored_while_the_merchant_api_stays_strict(
    intake: IntakeUnderTest,
) -> None:
    """Storefront widgets add ?_=<time> to skip their browser's cache: the public policy answered it 422 once every
    API route refused a query parameter it does not take, and the widgets showed no policy."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    override = "/v1/refund-policy/products/prod_course"
    assert (await intake.client.put(override, headers=merchant, json={"refund_window_days": 7})).is_success
    public = f"/v1/public/merchants/{merchant_id}/refund-policy"

    for query in ({}, {"product_id": "prod_course"}):
        plain = await intake.client.get(public, params=query)
        busted = await intake.client.get(public, params={**query, "_": "1700000000", "callback": "x"})
        assert busted.status_code == 200, busted.text
        assert busted.content == plain.content
        assert busted.headers["ETag"] == plain.headers["ETag"]
        assert busted.headers["Cache-Control"] == plain.headers["Cache-Control"] == "public, max-age=60"
        not_modified = await intake.client.get(
            public, params={**query, "_": "1700000001"}, headers={"If-None-Match": plain.headers["ETag"]}
        )
        assert not_modified.status_code == 304
        assert not_modified.headers["Cache-Control"] == "public, max-age=60"
    assert busted.json()["refund_window_days"] == 7

    # What the route does take is still read strictly: two products are not one.
    twice = await intake.client.get(f"{public}?product_id=prod_course&product_id=other&_=1")
    assert twice.status_code == 422 and twice.json()["error"]["param"] == "product_id"
    # The merchant's own API refuses what it does not take, as before.
    own = await intake.client.get("/v1/refund-policy", headers=merchant, params={"_": "1700000000"})
    assert own.status_code == 422 and own.json()["error"]["param"] == "_"


async def test_made_up_product_ids_and_unknown_merchants_neither_bypass_nor_flush_the_public_policy_cache(
    intake: IntakeUnderTest,
) -> None:
    """Each ?product_id= was an entry of its own, read from the database, and so was each unknown merchant: anyone
    could make every call a database read and push the merchants' answers out of memory."""
    small = PublicPolicyCache(timedelta(seconds=60), max_entries=8)
    kept, intake.app.state.public_policy_cache = intake.app.state.public_policy_cache, small
    try:
        merchant = await intake.merchant()
        merchant_id = await intake.merchant_id(merchant)
        override = "/v1/refund-policy/products/prod_course"
        assert (await intake.client.put(override, headers=merchant, json={"refund_window_days": 7})).is_success
        public = f"/v1/public/merchants/{merchant_id}/refund-policy"
        pages = [f"/policy/{merchant_id}", f"/policy/{merchant_id}/embed"]

        async def windows(product_id: str | None) -> list[int]:
            query = {"product_id": product_id} if product_id else {}
            json_answer = await intake.client.get(public, params=query)
            said = [json_answer.json()["refund_window_days"]]
            for page in pages:
                text = (await intake.client.get(page, params=query)).text
                found = re.search(r"within (\d+) days", text)
                assert found, text[:300]
                said.append(int(found.group(1)))
            return said

        assert (await windows(None), await windows("prod_course")) == ([14] * 3, [7] * 3)
        # Changed behind the API's back: within max-age, every answer below comes from memory.
        await intake.db.execute(
            "UPDATE refund_policies SET policy = '{\"refund_window_days\": 30}' WHERE merchant_id = $1", merchant_id
        )
        await intake.db.execute(
            "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ($1, '', $2)",
            merchant_id,
            '{"refund_window_days": 30}',
        )

        for n in range(20):
            assert await windows(f"made_up_{n}") == [14] * 3, "a product without override: the merchant's policy"
            assert (await intake.client.get(f"/policy/mer_nobody_{n}")).status_code == 404
            assert (await intake.client.get(f"/v1/public/merchants/mer_nobody_{n}/refund-policy")).status_code == 404

        assert (await windows(None), await windows("prod_course")) == ([14] * 3, [7] * 3), "nothing pushed out"
        await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 21})
        assert (await windows("made_up_0"), await windows("prod_course")) == ([21] * 3, [30] * 3)
    finally:
        intake.app.state.public_policy_cache = kept


async def test_a_command_for_a_payment_not_seen_yet_awaits_it_before_it_is_refused(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    payment_id = f"pay_billing_{uuid.uuid4().hex}"
    command = RefundSubmit(
        payment_id=payment_id,
        merchant_id=merchant_id,
        idempotency_key="ticket-early",
        reason="duplicate",
        amount=500,
        submitted_by="support-desk",
    )
    event = Event.wrap(command, source="refundflow/support-desk", sequence=1)
    wait = timedelta(seconds=intake.settings.awaited_event_wait_seconds)

    async with intake.db.acquire() as conn, conn.transaction():
        with pytest.raises(Awaits):
            await submit_refund(
                conn, event, command, now=intake.clock(), awaited_wait=wait, waited=False, links=intake.links
            )
    # Meanwhile billing's payment.succeeded arrives (here: the platform registers it).
    body = {
        "merchant_id": merchant_id,
        "customer_email": "ada@example.com",
        "amount": 4_000,
        "currency": "EUR",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "paid_at": intake.clock().isoformat(),
        "product": {"id": "prod_pro", "name": "Pro", "kind": "one_time"},
    }
    registered = (await intake.client.post("/v1/payments", headers=ADMIN, json=body)).json()
    command = command.model_copy(update={"payment_id": registered["id"]})
    async with intake.db.acquire() as conn, conn.transaction():
        with pytest.raises(Awaits):
            await submit_refund(
                conn,
                event,
                command.model_copy(update={"payment_id": "pay_never"}),
                now=intake.clock(),
                awaited_wait=wait,
                waited=False,
                links=intake.links,
            )
        assert (
            await submit_refund(
                conn, event, command, now=intake.clock(), awaited_wait=wait, waited=False, links=intake.links
            )
            is None
        )
    refunds = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert [(r["payment_id"], r["amount"], r["channel"]) for r in refunds] == [(registered["id"], 500, "command")]

    async with intake.db.acquire() as conn, conn.transaction():
        never = command.model_copy(update={"payment_id": "pay_never", "idempotency_key": "ticket-late"})
        refused = await submit_refund(
            conn, event, never, now=intake.clock(), awaited_wait=wait, waited=True, links=intake.links
        )
    assert refused is not None and refused.code == "payment_not_found"


async def test_portal_submissions_are_limited_per_ipv6_64_block_as_one_client(strict_intake: IntakeUnderTest) -> None:
    """As sign-in counts them: a /64 is what one IPv6 subscriber gets, and counted per address each of its 2**64
    addresses had a budget of its own."""
    merchant = await strict_intake.merchant()

    async def submit_from(address: str) -> int:
        payment = await strict_intake.payment(merchant)  # a payment each: only the per-address limit is reached
        customer = await portal_for(strict_intake, merchant, payment["id"])
        async with browser(strict_intake, address=address) as client:
            body = {"reason": "duplicate", "amount": 1}
            return (await client.post("/v1/portal/refund-requests", headers=customer, json=body)).status_code

    same_block = ["2001:db8:9:1::1", "2001:db8:9:1:ffff::2", "2001:db8:9:1::3"]
    assert [await submit_from(address) for address in same_block] == [201, 201, 429]
    assert await submit_from("2001:db8:9:2::1") == 201  # the next /64 is another client
    mapped = ["192.0.2.9", "::ffff:192.0.2.9", "192.0.2.9"]
    assert [await submit_from(address) for address in mapped] == [201, 201, 429]  # IPv4, however it is written
