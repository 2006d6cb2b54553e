"""Dual control binds approvals to an amount; a key cannot lock its merchant out; the platform can recover access."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support.dashboard_people import accept_invite, merchant_with_owner
from tests.support.intake_harness import ADMIN, IntakeUnderTest, running_intake
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_second_approver_must_approve_the_same_amount_or_the_approval_starts_over(
    intake: IntakeUnderTest,
) -> None:
    policy = {"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    merchant, owner = await merchant_with_owner(intake, policy=policy)
    issued = await intake.client.post(
        f"/v1/merchants/{await intake.merchant_id(merchant)}/api-keys", headers=ADMIN, json={"name": "colleague"}
    )
    colleague = {"Authorization": f"Bearer {issued.json()['api_key']}"}
    payment = await intake.payment(merchant, amount=9_000)
    refund = await intake.refund(merchant, payment["id"], amount=5_000)
    approve = f"/v1/refunds/{refund['id']}/approve"

    first = (await intake.client.post(approve, headers=merchant, json={"amount": 2_000})).json()
    assert (first["status"], first["approvals"]) == ("pending", [first["approvals"][0]])
    other_amount = (await intake.client.post(approve, headers=colleague)).json()  # the full 5000
    assert other_amount["status"] == "pending"
    assert len(other_amount["approvals"]) == 1 and other_amount["approvals"] != first["approvals"]
    assert [t["action"] for t in other_amount["timeline"]] == [
        "requested",
        "approval_1_of_2",
        "approval_restarted",
        "approval_1_of_2",
    ]
    assert await intake.staged("refund.approved", payment["id"]) == []

    page = f"/dashboard/refunds/{refund['id']}"
    await owner.post_form(page, f"{page}/approve", {"amount": "50.00"})  # a person agrees with the 5000
    agreed = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (agreed["status"], agreed["amount"]) == ("processing", 5_000)
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [5_000]


async def test_the_first_approvers_approval_sent_again_after_a_second_approver_completed_it_is_a_repeat(
    intake: IntakeUnderTest,
) -> None:
    """The completing approver said nothing to the customer, so the decision carries the first approver's message.
    The first's retry (an ERP after a timeout) is its own approval again: 200, and nothing changes."""
    policy = {"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    merchant, owner = await merchant_with_owner(intake, policy=policy)
    payment = await intake.payment(merchant, amount=9_000)
    refund = await intake.refund(merchant, payment["id"], amount=5_000)
    approve = f"/v1/refunds/{refund['id']}/approve"
    told = {"note_to_customer": "On its way."}

    first = await intake.client.post(approve, headers=merchant, json=told)
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    page = f"/dashboard/refunds/{refund['id']}"
    await owner.post_form(page, f"{page}/approve", {"amount": "50.00"})  # no notes
    for repeat in (told, {"amount": 5_000, **told}, None):
        again = await intake.client.post(approve, headers=merchant, json=repeat)
        assert again.status_code == 200, (repeat, again.text)
        assert again.json()["status"] == "processing"
    other_amount = await intake.client.post(approve, headers=merchant, json={"amount": 2_000, **told})
    assert other_amount.status_code == 409, other_amount.text
    assert other_amount.json()["error"]["code"] == "invalid_status_transition"

    issued = await intake.client.post(
        f"/v1/merchants/{await intake.merchant_id(merchant)}/api-keys", headers=ADMIN, json={"name": "colleague"}
    )
    never_approved = {"Authorization": f"Bearer {issued.json()['api_key']}"}
    asks_another = await intake.client.post(approve, headers=never_approved, json={"note_to_customer": "Other."})
    assert asks_another.status_code == 409, asks_another.text
    assert asks_another.json()["error"]["code"] == "invalid_status_transition"
    decided = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (decided["amount"], decided["customer_note"]) == (5_000, "On its way.")
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [5_000]


async def test_a_key_cannot_revoke_the_last_live_key_of_its_merchant(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    [own] = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]

    alone = await intake.client.delete(f"/v1/api-keys/{own['id']}", headers=merchant)
    assert alone.status_code == 409 and alone.json()["error"]["code"] == "last_api_key"

    colleague = await intake.second_key(merchant)
    assert (await intake.client.delete(f"/v1/api-keys/{own['id']}", headers=colleague)).status_code == 200
    keys = (await intake.client.get("/v1/api-keys", headers=colleague)).json()["data"]
    [live] = [k for k in keys if k["revoked_at"] is None]
    last = await intake.client.delete(f"/v1/api-keys/{live['id']}", headers=colleague)
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_api_key"
    assert (await intake.client.get("/v1/api-keys", headers=colleague)).status_code == 200


async def test_the_platform_issues_a_new_key_to_a_merchant_that_lost_its_keys(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    await intake.db.execute("UPDATE api_keys SET revoked_at = now() WHERE merchant_id = $1", merchant_id)
    assert (await intake.client.get("/v1/api-keys", headers=merchant)).status_code == 401

    as_merchant = await intake.client.post(f"/v1/merchants/{merchant_id}/api-keys", headers=merchant, json={})
    assert as_merchant.status_code == 401
    issued = await intake.client.post(
        f"/v1/merchants/{merchant_id}/api-keys", headers=ADMIN, json={"name": "recovered by support"}
    )
    assert issued.status_code == 201, issued.text
    recovered = {"Authorization": f"Bearer {issued.json()['api_key']}"}
    keys = (await intake.client.get("/v1/api-keys", headers=recovered)).json()["data"]
    assert [k["name"] for k in keys if k["revoked_at"] is None] == ["recovered by support"]
    unknown = await intake.client.post("/v1/merchants/mer_nobody/api-keys", headers=ADMIN, json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "merchant_not_found"


async def test_once_a_merchant_has_an_owner_a_key_can_neither_mint_nor_revoke_keys(intake: IntakeUnderTest) -> None:
    merchant, owner = await merchant_with_owner(intake)
    minted = await intake.client.post("/v1/api-keys", headers=merchant, json={"name": "twin"})
    assert minted.status_code == 403 and minted.json()["error"]["code"] == "api_keys_managed_by_owners"
    [own] = (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]  # reading still works
    revoked = await intake.client.delete(f"/v1/api-keys/{own['id']}", headers=merchant)
    assert revoked.status_code == 403 and revoked.json()["error"]["code"] == "api_keys_managed_by_owners"

    created = await owner.post_form("/dashboard/settings", "/dashboard/settings/api-keys", {"name": "billing"})
    assert created.status_code == 200 and 'id="new-api-key">rfk_' in created.text
    names = [k["name"] for k in (await intake.client.get("/v1/api-keys", headers=merchant)).json()["data"]]
    assert names == ["default", "billing"]


async def test_an_owner_who_never_joined_leaves_the_keys_managed_by_keys(intake: IntakeUnderTest) -> None:
    created = await intake.client.post(
        "/v1/merchants", headers=ADMIN, json={"name": "Acme", "owner_email": "mistyped@acme.example"}
    )
    assert created.status_code == 201, created.text
    merchant = {"Authorization": f"Bearer {created.json()['api_key']}"}
    lapsed = timedelta(hours=73)  # the invite lapsed: nobody can sign in to the dashboard
    intake.clock.advance(lapsed)
    try:
        minted = await intake.client.post("/v1/api-keys", headers=merchant, json={"name": "replacement"})
        assert minted.status_code == 201, minted.text
        replacement = {"Authorization": f"Bearer {minted.json()['api_key']}"}
        [leaked, _] = (await intake.client.get("/v1/api-keys", headers=replacement)).json()["data"]
        revoked = await intake.client.delete(f"/v1/api-keys/{leaked['id']}", headers=replacement)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert (await intake.client.get("/v1/api-keys", headers=merchant)).status_code == 401
    finally:
        intake.clock.advance(-lapsed)


async def test_one_approver_cannot_send_more_than_the_threshold_by_splitting_it_into_refunds(
    intake: IntakeUnderTest,
) -> None:
    """The threshold is on what the payment's refunds send together, as auto-approval counts: nine refunds of
    1000, each approved by one key, sent 9000 without a second person."""
    policy = {"second_approval_above": {"amount": 1_000, "currency": "EUR"}}
    merchant, owner = await merchant_with_owner(intake, policy=policy)
    payment = await intake.payment(merchant, amount=9_000)

    async def approved_by_the_key(refund: dict[str, Any], **body: Any) -> str:
        done = await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json=body)
        assert done.status_code == 200, done.text
        status: str = done.json()["status"]
        return status

    rejected = await intake.refund(merchant, payment["id"], amount=1_000)
    assert (await intake.client.post(f"/v1/refunds/{rejected['id']}/reject", headers=merchant)).status_code == 200
    waiting = await intake.refund(merchant, payment["id"], amount=1_000)  # asked, not approved: sends nothing yet
    first = await intake.refund(merchant, payment["id"], amount=1_000)
    assert await approved_by_the_key(first) == "processing", "at the threshold, a rejected and a pending one besides"

    second = await intake.refund(merchant, payment["id"], amount=1_000)
    assert await approved_by_the_key(second) == "pending", "1000 out already: another 1000 needs a second person"
    ask = {"payment_id": payment["id"], "amount": 500}
    quote = await intake.client.post("/v1/refunds/quote", headers=merchant, json=ask)
    assert quote.json()["approvals_required"] == 2
    waiting_page = await owner.page(f"/dashboard/refunds/{waiting['id']}")
    assert "This amount needs 2 different people to approve it." in waiting_page.text
    page = f"/dashboard/refunds/{second['id']}"
    await owner.post_form(page, f"{page}/approve", {"amount": "10.00"})  # a person agrees with the key's 1000
    agreed = (await intake.client.get(f"/v1/refunds/{second['id']}", headers=merchant)).json()
    assert agreed["status"] == "processing"
    assert [e["amount"] for e in await intake.staged("refund.approved", payment["id"])] == [1_000, 1_000]

    # Approving 1000 of 5000 sends the threshold, and the rest asked again needs a second person.
    other = await intake.payment(merchant, amount=9_000)
    assert await approved_by_the_key(await intake.refund(merchant, other["id"], amount=5_000), amount=1_000) == (
        "processing"
    )
    rest = await intake.refund(merchant, other["id"], amount=4_000)
    assert await approved_by_the_key(rest, amount=1_000) == "pending"


async def test_once_a_merchant_has_an_owner_a_key_cannot_change_the_approval_rules(intake: IntakeUnderTest) -> None:
    """One key approved, switched the two-person rule off, approved again (the money went out) and put it back."""
    email = f"owner-{uuid.uuid4().hex[:8]}@acme.example"
    created = await intake.client.post("/v1/merchants", headers=ADMIN, json={"name": "Acme", "owner_email": email})
    assert created.status_code == 201, created.text
    merchant = {"Authorization": f"Bearer {created.json()['api_key']}"}
    intake.merchant_ids[created.json()["api_key"]] = created.json()["id"]
    threshold = {"amount": 1_000, "currency": "EUR"}
    course = "/v1/refund-policy/products/prod_course"
    book = "/v1/refund-policy/products/prod_book"
    # Before anyone joined, the key sets the rules (as before the dashboard).
    assert (
        await intake.client.put("/v1/refund-policy", headers=merchant, json={"second_approval_above": threshold})
    ).is_success
    assert (await intake.client.put(course, headers=merchant, json={"second_approval_above": threshold})).is_success
    assert (await intake.client.put(book, headers=merchant, json={"refund_window_days": 30})).is_success
    await accept_invite(intake, created.json()["owner_invite_url"], email)

    payment = await intake.payment(merchant, amount=9_000)
    refund = await intake.refund(merchant, payment["id"], amount=5_000)
    approve = f"/v1/refunds/{refund['id']}/approve"
    assert (await intake.client.post(approve, headers=merchant)).json()["status"] == "pending"

    def refused(response: Any) -> bool:
        return bool(
            response.status_code == 403 and response.json()["error"]["code"] == "approval_rules_managed_by_owners"
        )

    assert refused(await intake.client.put("/v1/refund-policy", headers=merchant, json={}))
    rule = {"max_amount": {"amount": 9_000, "currency": "EUR"}, "reasons": ["duplicate"]}
    with_rule = {"second_approval_above": threshold, "auto_approve": rule}
    assert refused(await intake.client.put("/v1/refund-policy", headers=merchant, json=with_rule))
    assert refused(await intake.client.put(course, headers=merchant, json={"second_approval_above": None}))
    assert refused(await intake.client.put(course, headers=merchant, json={"refund_window_days": 21}))
    assert refused(await intake.client.delete(course, headers=merchant))
    assert refused(await intake.client.put(book, headers=merchant, json={"auto_approve": rule}))
    assert refused(await intake.client.put(book, headers=merchant, json={"second_approval_above": None}))
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert (policy["policy"]["second_approval_above"], policy["policy"]["auto_approve"]) == (threshold, None)
    assert policy["product_overrides"]["prod_course"]["second_approval_above"] == threshold
    assert "second_approval_above" not in policy["product_overrides"]["prod_book"], "the merchant's applies"
    again = await intake.client.post(approve, headers=merchant)
    assert again.json()["status"] == "pending" and await intake.staged("refund.approved", payment["id"]) == []

    # The other fields stay the key's to change, the rules left as they are.
    changed = await intake.client.put(
        "/v1/refund-policy", headers=merchant, json={**policy["policy"], "refund_window_days": 30}
    )
    assert changed.status_code == 200 and changed.json()["policy"]["refund_window_days"] == 30
    window = {"refund_window_days": 21, "second_approval_above": threshold}
    assert (await intake.client.put(course, headers=merchant, json=window)).status_code == 200
    assert (await intake.client.put(book, headers=merchant, json={"refund_window_days": 21})).status_code == 200
    assert (await intake.client.delete(book, headers=merchant)).status_code == 200


async def test_a_key_saving_the_policy_while_the_owner_first_saves_it_keeps_the_owners_two_person_rule(
    intake: IntakeUnderTest,
) -> None:
    """A key's PUT read the policy locking its row, but before the first save there is no row: the owner's first
    save landed between the key's read (the defaults) and its write, the key's approval rules matched those defaults,
    and its whole document put the owner's two-person rule back to none without a word."""
    merchant, owner = await merchant_with_owner(intake)  # no policy saved yet
    merchant_id = await intake.merchant_id(merchant)
    owners_rules = {
        "refund_window_days": "14",
        "accepted_reasons": ["duplicate", "other"],
        "process_time": "5-10 business days",
        "review_target_hours": "48",
        "second_approval_enabled": "on",
        "second_approval_amount": "100.00",
        "second_approval_currency": "EUR",
    }

    async def lock_waits() -> int:
        waiting: int = await intake.db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE '%FROM merchants WHERE id = $1 FOR UPDATE%'"
        )
        return waiting

    async with intake.db.acquire() as pause, pause.transaction():
        # Holding the merchant's row (as an owner changing the team would) stops the key's PUT where it waits for
        # the merchant's lock; an insert's foreign key check is not stopped by this lock.
        await pause.execute("SELECT 1 FROM merchants WHERE id = $1 FOR NO KEY UPDATE", merchant_id)
        keys_put = asyncio.create_task(
            intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 30})
        )

        async def key_waits() -> bool:
            return await lock_waits() == 1

        await eventually(key_waits, timeout=30)
        owners_save = asyncio.create_task(
            owner.post_form("/dashboard/refund-policy", "/dashboard/refund-policy", owners_rules)
        )

        async def owner_saved_or_waits() -> bool:
            return owners_save.done() or await lock_waits() == 2

        await eventually(owner_saved_or_waits, timeout=30)
    key_answer, owner_answer = await keys_put, await owners_save

    assert owner_answer.status_code == 303, owner_answer.text[:500]
    if key_answer.status_code == 403:  # the key came after the owner: its rules (none) differ from the owner's
        assert key_answer.json()["error"]["code"] == "approval_rules_managed_by_owners"
    else:  # the key came first, with the defaults the owner then replaced
        assert key_answer.status_code == 200, key_answer.text
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert policy["second_approval_above"] == {"amount": 10_000, "currency": "EUR"}


async def test_a_key_may_erase_a_customer_once_owners_have_joined_and_the_erasure_names_the_key(
    intake: IntakeUnderTest,
) -> None:
    """Unlike the approval rules, an erasure loosens no control over money (ids, amounts and the ledger stay), and a
    customer's request reaches the merchant's support tooling, which holds a key: a key may erase, and is named."""
    merchant, _owner = await merchant_with_owner(intake)
    address = f"grace.{uuid.uuid4().hex[:6]}@example.com"
    payment = await intake.payment(merchant, customer_email=address)

    answer = await intake.client.post("/v1/customers/erase", headers=merchant, json={"email": address})

    assert answer.status_code == 201, answer.text
    assert answer.json()["payments_erased"] == 1
    erased_by = await intake.db.fetchval("SELECT erased_by FROM customer_erasures WHERE id = $1", answer.json()["id"])
    key_id = await intake.db.fetchval(
        "SELECT id FROM api_keys WHERE merchant_id = $1", await intake.merchant_id(merchant)
    )
    assert erased_by == f"api_key:{key_id}"
    stored = await intake.db.fetchval("SELECT customer_email FROM payments WHERE id = $1", payment["id"])
    assert stored == ""
