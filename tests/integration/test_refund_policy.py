"""The merchant's refund policy, product overrides, the public policy, and the soft-rule flags it raises."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support.dashboard_people import merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.portal_customers import text_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


async def test_a_new_merchant_has_the_default_policy(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert policy["refund_window_days"] == 14
    assert policy["excluded_categories"] == ["consumable", "customized"]
    assert policy["process_time"] == "5–10 business days"
    assert policy["review_target_hours"] == 48
    assert len(policy["accepted_reasons"]) == 8


@pytest.mark.parametrize("days", [6, 31])
async def test_the_refund_window_is_between_7_and_30_days(intake: IntakeUnderTest, days: int) -> None:
    merchant = await intake.merchant()
    response = await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": days})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_a_product_override_changes_only_what_it_sets(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 7})
    response = await intake.client.put(
        "/v1/refund-policy/products/prod_course", headers=merchant, json={"refund_window_days": 30}
    )
    assert response.json()["product_overrides"] == {"prod_course": {"refund_window_days": 30}}, "only what it sets"
    merchant_id = await intake.merchant_id(merchant)
    public = f"/v1/public/merchants/{merchant_id}/refund-policy"
    assert (await intake.client.get(public)).json()["refund_window_days"] == 7
    course = (await intake.client.get(public, params={"product_id": "prod_course"})).json()
    assert course["refund_window_days"] == 30
    assert course["excluded_categories"] == ["consumable", "customized"]

    deleted = await intake.client.delete("/v1/refund-policy/products/prod_course", headers=merchant)
    assert deleted.json()["product_overrides"] == {}
    assert (await intake.client.get(public, params={"product_id": "prod_course"})).json()["refund_window_days"] == 7


async def test_an_override_read_and_sent_back_keeps_the_merchants_approval_rules(intake: IntakeUnderTest) -> None:
    """The override was answered with null for every field it does not set, and a null approval rule sent back
    turns it off: reading an override and saving it with its processing time changed switched the two-person rule
    and automatic approval off for that product (and was refused 403 once an owner had joined)."""
    rules = {
        "second_approval_above": {"amount": 5_000, "currency": "EUR"},
        "auto_approve": {"max_amount": {"amount": 1_000, "currency": "EUR"}, "reasons": ["duplicate"]},
    }
    merchant, _owner = await merchant_with_owner(
        intake, policy=rules, overrides={"prod_pro": {"refund_window_days": 30}}
    )
    payment = await intake.payment(merchant)

    async def approvals_required() -> int:
        quote = await intake.client.post(
            "/v1/refunds/quote", headers=merchant, json={"payment_id": payment["id"], "amount": 9_000}
        )
        assert quote.status_code == 200, quote.text
        required: int = quote.json()["approvals_required"]
        return required

    assert await approvals_required() == 2
    read = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["product_overrides"]["prod_pro"]
    assert read == {"refund_window_days": 30}, "what it does not set is not said (the merchant's rules apply)"
    sent_back = await intake.client.put(
        "/v1/refund-policy/products/prod_pro", headers=merchant, json={**read, "process_time": "3 business days"}
    )
    assert sent_back.status_code == 200, sent_back.text
    assert await approvals_required() == 2

    # An override that switches a rule off says so with null, and sending it back keeps it off.
    off = {"refund_window_days": 30, "auto_approve": None}
    other = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=other, json=rules)
    await intake.client.put("/v1/refund-policy/products/prod_pro", headers=other, json=off)
    read = (await intake.client.get("/v1/refund-policy", headers=other)).json()["product_overrides"]["prod_pro"]
    assert read == off
    again = await intake.client.put("/v1/refund-policy/products/prod_pro", headers=other, json=read)
    assert again.json()["product_overrides"]["prod_pro"] == off


async def test_an_override_saved_in_the_dashboard_keeps_the_rules_its_form_does_not_show_and_lists_them_in_words(
    intake: IntakeUnderTest,
) -> None:
    """The dashboard's override form has the window, the processing time and the categories: saving it replaced the
    whole override, so a product's approval rules, reasons and review target set through the API were lost."""
    rules = {"second_approval_above": {"amount": 10_000, "currency": "EUR"}}
    by_api = {
        "second_approval_above": {"amount": 5_000, "currency": "EUR"},
        "auto_approve": None,  # off for this product, whatever the merchant's policy says
        "accepted_reasons": ["duplicate", "product_not_as_described"],
        "review_target_hours": 24,
        "process_time": "3 business days",
    }
    merchant, owner = await merchant_with_owner(intake, policy=rules, overrides={"prod_course": by_api})

    page = "/dashboard/refund-policy"
    form = {"product_id": "prod_course", "refund_window_days": "30", "process_time": "", "excluded_categories": ""}
    saved = await owner.post_form(page, f"{page}/overrides", form)
    assert saved.status_code == 303, saved.text[:500]
    stored = await intake.db.fetchval(
        "SELECT policy FROM refund_policies WHERE merchant_id = $1 AND product_id = 'prod_course'",
        await intake.merchant_id(merchant),
    )
    assert json.loads(stored) == {**by_api, "refund_window_days": 30}, "what the form does not show is kept"

    listed = (await owner.page(page)).text
    for words in (
        "Refund window: 30 days",
        "Processing time: 3 business days",
        "Accepted reasons: Duplicate, Product not as described",
        "Review target: 24 hours",
        "Automatic approval: off",
        "Two people approve above €50.00",
    ):
        assert words in listed, words
    assert "None" not in listed and "amount, currency" not in listed


async def test_the_public_policy_needs_no_key_reads_plainly_and_keeps_approval_rules_private(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    await intake.client.put(
        "/v1/refund-policy",
        headers=merchant,
        json={
            "refund_window_days": 30,
            "excluded_categories": ["consumable"],
            "process_time": "3 business days",
            "second_approval_above": {"amount": 50_000, "currency": "EUR"},
        },
    )
    merchant_id = await intake.merchant_id(merchant)
    response = await intake.client.get(f"/v1/public/merchants/{merchant_id}/refund-policy")
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == (
        "You can ask for a refund within 30 days of your purchase. Not refundable: consumable products."
        " Approved refunds reach your original payment method within 3 business days."
        " Outside these terms you can still ask: Acme decides each request."
    )
    assert "second_approval_above" not in body and "auto_approve" not in body
    unknown = await intake.client.get("/v1/public/merchants/mer_nobody/refund-policy")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "merchant_not_found"


async def test_the_dashboards_preview_and_the_public_text_say_what_the_embed_says(intake: IntakeUnderTest) -> None:
    """The editor's "Public text" and the JSON's text left out the reasons accepted and that the customer may still
    ask outside the terms, which the hosted page and the embed at checkout say."""
    policy = {"accepted_reasons": ["duplicate", "technical_issue"], "excluded_categories": ["consumable"]}
    merchant, owner = await merchant_with_owner(intake, policy=policy)
    merchant_id = await intake.merchant_id(merchant)
    embed = (await intake.client.get(f"/policy/{merchant_id}/embed")).text
    points = [text_of(p) for p in re.findall(r"<li>(.*?)</li>", embed)]
    said = " ".join(points)
    assert "Acme refunds when: " in said and "charged twice" in said
    assert "Outside these terms you can still ask: Acme decides each request." in said

    public = (await intake.client.get(f"/v1/public/merchants/{merchant_id}/refund-policy")).json()
    assert public["text"] == said
    page = "/dashboard/refund-policy"
    shown = re.search(r'<div class="preview" id="policy-preview">(.*?)</div>', (await owner.page(page)).text, re.S)
    assert shown is not None and text_of(shown.group(1)) == said
    form = {
        "refund_window_days": "14",
        "process_time": "5–10 business days",
        "review_target_hours": "48",
        "excluded_categories": "consumable",
        "accepted_reasons": ["duplicate", "technical_issue"],
    }
    preview = await owner.post_form(page, f"{page}/preview", form)
    assert preview.status_code == 200, preview.text[:500]
    assert preview.json()["text"] == said


async def test_a_request_outside_the_window_for_an_excluded_category_is_flagged_but_still_pending(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(
        merchant,
        paid_at=(intake.clock() - timedelta(days=20)).isoformat(),
        product={"id": "prod_gems", "name": "Gems", "kind": "one_time", "category": "consumable"},
    )
    refund = await intake.refund(merchant, payment["id"], reason="duplicate")
    assert refund["status"] == "pending"
    assert refund["flags"] == ["outside_refund_window", "excluded_category"]


async def test_a_flag_is_explained_by_the_policy_it_was_judged_by_not_the_one_of_today(
    intake: IntakeUnderTest,
) -> None:
    """The refund page read the policy as it is now: widened to 30 days with no category excluded, a request
    flagged under 14 days said "Your policy: refunds within 30 days of purchase. This was asked 20 days after"."""
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.payment(
        merchant,
        paid_at=(intake.clock() - timedelta(days=20)).isoformat(),
        product={"id": "prod_gems", "name": "Gems", "kind": "one_time", "category": "consumable"},
    )
    refund = await intake.refund(merchant, payment["id"], reason="duplicate")
    assert refund["flags"] == ["outside_refund_window", "excluded_category"]
    widened = {"refund_window_days": 30, "excluded_categories": []}
    assert (await intake.client.put("/v1/refund-policy", headers=merchant, json=widened)).is_success

    seen = text_of((await owner.page(f"/dashboard/refunds/{refund['id']}")).text)
    assert "Your policy: refunds within 14 days of purchase. This was asked more than 20 days after" in seen
    assert "Your policy does not refund consumable, customized products; this product is consumable." in seen

    # A request made before the terms were kept is explained in today's policy.
    await intake.db.execute("UPDATE refunds SET judged_by = NULL WHERE id = $1", refund["id"])
    seen = text_of((await owner.page(f"/dashboard/refunds/{refund['id']}")).text)
    assert "Your policy: refunds within 30 days of purchase." in seen


async def test_a_reason_the_policy_does_not_accept_is_flagged(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"accepted_reasons": ["technical_issue"]})
    payment = await intake.payment(merchant)
    assert (await intake.refund(merchant, payment["id"], reason="duplicate"))["flags"] == ["reason_not_accepted"]


async def test_a_request_within_the_policy_has_no_flags(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    assert (await intake.refund(merchant, payment["id"]))["flags"] == []


async def test_a_request_follows_its_products_override_and_the_merchants_policy_for_other_products(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 7})
    await intake.client.put("/v1/refund-policy/products/prod_course", headers=merchant, json={"refund_window_days": 30})
    ten_days_ago = (intake.clock() - timedelta(days=10)).isoformat()
    flags = {}
    for product in ("prod_course", "prod_ebook"):
        details = {"id": product, "name": product, "kind": "one_time", "category": "digital"}
        payment = await intake.payment(merchant, paid_at=ten_days_ago, product=details)
        flags[product] = (await intake.refund(merchant, payment["id"]))["flags"]
    assert flags == {"prod_course": [], "prod_ebook": ["outside_refund_window"]}


def _field_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html)
    assert found is not None, name
    return found.group(1)


async def test_thresholds_are_offered_in_the_merchants_own_currency_and_another_one_is_warned_about(
    intake: IntakeUnderTest,
) -> None:
    """A yen merchant ticking both rules and leaving the currency as the page filled it got EUR thresholds: every
    yen refund needed two people and none was approved automatically, without a word anywhere."""
    merchant, owner = await merchant_with_owner(intake)
    for currency in ("JPY", "JPY", "EUR"):
        await intake.payment(merchant, amount=50_000, currency=currency)
    page = "/dashboard/refund-policy"
    shown = (await owner.page(page)).text
    assert _field_value(shown, "auto_approve_currency") == "JPY", "the currency most of its payments are in"
    assert _field_value(shown, "second_approval_currency") == "JPY"
    form = {
        "refund_window_days": "14",
        "process_time": "5 days",
        "review_target_hours": "48",
        "accepted_reasons": "duplicate",
        "auto_approve_enabled": "1",
        "auto_approve_amount": "3,000",
        "auto_approve_currency": _field_value(shown, "auto_approve_currency"),
        "auto_approve_reasons": "duplicate",
        "second_approval_enabled": "1",
        "second_approval_amount": "20,000",
        "second_approval_currency": _field_value(shown, "second_approval_currency"),
    }
    assert (await owner.post_form(page, page, form)).status_code == 303
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]
    assert policy["auto_approve"]["max_amount"] == {"amount": 3_000, "currency": "JPY"}
    assert policy["second_approval_above"] == {"amount": 20_000, "currency": "JPY"}
    assert "none of your payments" not in text_of((await owner.page(page)).text)

    # A threshold in a currency none of its payments use is saved (a merchant may be about to sell in it), and said.
    saved = await owner.post_form(page, page, {**form, "second_approval_currency": "USD"})
    assert saved.status_code == 303, saved.text[:500]
    warned = text_of((await owner.page(page)).text)
    assert (
        "The two-person rule is set in USD, and none of your payments are in USD: every refund of a payment in"
        " another currency needs two people to approve it." in warned
    )
    assert "Automatic approval is set in" not in warned

    # The refund page says why a small refund needs two people.
    payment = await intake.payment(merchant, amount=5_000, currency="JPY")
    refund = await intake.refund(merchant, payment["id"], amount=100)
    seen = text_of((await owner.page(f"/dashboard/refunds/{refund['id']}")).text)
    assert (
        "This amount needs 2 different people to approve it: the two-person rule is set in USD and this payment is"
        " in JPY." in seen
    )


async def test_automatic_approval_for_a_reason_the_policy_does_not_accept_is_refused(intake: IntakeUnderTest) -> None:
    """Such a rule was saved without a word and approved nothing: a reason not accepted is flagged, and a flagged
    request is never approved automatically."""
    rule = {"max_amount": {"amount": 1_000, "currency": "EUR"}, "reasons": ["duplicate", "technical_issue"]}
    merchant = await intake.merchant()

    def refused(response: Any) -> bool:
        return bool(
            response.status_code == 422 and response.json()["error"]["code"] == "auto_approve_reason_not_accepted"
        )

    alone = {"accepted_reasons": ["duplicate"], "auto_approve": rule}
    answer = await intake.client.put("/v1/refund-policy", headers=merchant, json=alone)
    assert refused(answer), answer.text
    assert "technical_issue" in answer.json()["error"]["message"]

    # A product's override, merged with the policy: its own rule, or its own reasons narrowing the policy's rule.
    assert (await intake.client.put("/v1/refund-policy", headers=merchant, json={"auto_approve": rule})).is_success
    course = "/v1/refund-policy/products/prod_course"
    assert refused(await intake.client.put(course, headers=merchant, json={"accepted_reasons": ["duplicate"]}))
    narrow = {"accepted_reasons": ["duplicate"], "auto_approve": {**rule, "reasons": ["duplicate"]}}
    assert (await intake.client.put(course, headers=merchant, json=narrow)).is_success
    # The policy's reasons narrowed under an override's rule (its own reasons left to the policy).
    book = "/v1/refund-policy/products/prod_book"
    assert (await intake.client.put(book, headers=merchant, json={"auto_approve": rule})).is_success
    narrowed = await intake.client.put(
        "/v1/refund-policy", headers=merchant, json={"accepted_reasons": ["duplicate"], "auto_approve": None}
    )
    assert refused(narrowed) and "prod_book" in narrowed.json()["error"]["message"], narrowed.text
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert policy["policy"]["auto_approve"] == rule and "prod_course" in policy["product_overrides"], "nothing saved"


async def test_the_editor_says_at_the_reasons_that_automatic_approval_needs_them_accepted(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    page = "/dashboard/refund-policy"
    form = {
        "refund_window_days": "14",
        "process_time": "5 days",
        "review_target_hours": "48",
        "accepted_reasons": "duplicate",
        "auto_approve_enabled": "1",
        "auto_approve_amount": "10",
        "auto_approve_currency": "EUR",
        "auto_approve_reasons": ["duplicate", "technical_issue"],
    }
    answer = await owner.post_form(page, page, form)
    assert answer.status_code == 422, answer.text[:500]
    error = re.search(r'<p class="field-error" id="auto_approve_reasons-error">(.*?)</p>', answer.text, re.S)
    assert error is not None, answer.text
    assert "technical_issue" in text_of(error.group(1)) and "auto_approve_reason_not_accepted" in error.group(1)
    assert (await intake.client.get("/v1/refund-policy", headers=merchant)).json()["policy"]["auto_approve"] is None


LEGACY_RULE = {"max_amount": {"amount": 1_000, "currency": "EUR"}, "reasons": ["duplicate", "technical_issue"]}


async def _store_as_before_the_rule(intake: IntakeUnderTest, merchant_id: str) -> None:
    """What merchants saved while such combinations were allowed: a policy whose rule is for a reason it does not
    accept (technical_issue), and an override whose accepted reasons leave out another of it (duplicate)."""
    await intake.db.execute(
        "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ($1, '', $2::jsonb), ($1, $3, $4::jsonb)",
        merchant_id,
        json.dumps({"accepted_reasons": ["duplicate"], "auto_approve": LEGACY_RULE}),
        "prod_course",
        json.dumps({"accepted_reasons": ["technical_issue"], "process_time": "3 days"}),
    )


def _refused_naming(response: Any, *words: str) -> bool:
    error = response.json().get("error") or {}
    return bool(
        response.status_code == 422
        and error.get("code") == "auto_approve_reason_not_accepted"
        and all(word in error["message"] for word in words)
    )


async def test_a_combination_saved_before_the_rule_is_kept_until_a_save_adds_one(intake: IntakeUnderTest) -> None:
    """Refusing every save of a merchant holding one broke its integrations on the upgrade, naming a field they did
    not send: only a save that adds a rule for a reason not accepted is refused."""
    merchant = await intake.merchant()
    await _store_as_before_the_rule(intake, await intake.merchant_id(merchant))
    legacy = {"accepted_reasons": ["duplicate"], "auto_approve": LEGACY_RULE}
    course = "/v1/refund-policy/products/prod_course"

    window = await intake.client.put("/v1/refund-policy", headers=merchant, json={**legacy, "refund_window_days": 21})
    assert window.status_code == 200, window.text
    process_time = await intake.client.put(
        course, headers=merchant, json={"accepted_reasons": ["technical_issue"], "process_time": "2 days"}
    )
    assert process_time.status_code == 200, process_time.text
    assert process_time.json()["product_overrides"]["prod_course"]["process_time"] == "2 days"

    # New ones: in the policy saved, in a product's override on it, in an override under a changed policy.
    wider = {**LEGACY_RULE, "reasons": ["duplicate", "technical_issue", "fraudulent"]}
    policy_rule = await intake.client.put("/v1/refund-policy", headers=merchant, json={**legacy, "auto_approve": wider})
    assert _refused_naming(policy_rule, "fraudulent"), policy_rule.text
    book = await intake.client.put(
        "/v1/refund-policy/products/prod_book", headers=merchant, json={"accepted_reasons": ["fraudulent"]}
    )
    assert _refused_naming(book, "prod_book", "duplicate"), book.text
    narrowed = await intake.client.put(
        course, headers=merchant, json={"accepted_reasons": ["fraudulent"], "process_time": "2 days"}
    )
    assert _refused_naming(narrowed, "prod_course", "technical_issue"), narrowed.text
    under_course = {"accepted_reasons": ["duplicate", "technical_issue", "fraudulent"], "auto_approve": wider}
    merchant_wide = await intake.client.put("/v1/refund-policy", headers=merchant, json=under_course)
    assert _refused_naming(merchant_wide, "prod_course", "fraudulent"), merchant_wide.text

    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert policy["policy"]["auto_approve"] == LEGACY_RULE and policy["policy"]["refund_window_days"] == 21
    assert policy["product_overrides"] == {
        "prod_course": {"accepted_reasons": ["technical_issue"], "process_time": "2 days"}
    }, "nothing refused was saved"


async def test_the_editor_saves_a_policy_holding_such_a_combination_from_before_the_rule(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    await _store_as_before_the_rule(intake, await intake.merchant_id(merchant))
    page = "/dashboard/refund-policy"
    form = {
        "refund_window_days": "21",
        "process_time": "5 days",
        "review_target_hours": "48",
        "accepted_reasons": "duplicate",
        "auto_approve_enabled": "1",
        "auto_approve_amount": "10",
        "auto_approve_currency": "EUR",
        "auto_approve_reasons": ["duplicate", "technical_issue"],
    }
    saved = await owner.post_form(page, page, form)
    assert saved.status_code == 303, saved.text[:500]
    override = await owner.post_form(page, f"{page}/overrides", {"product_id": "prod_course", "process_time": "2 days"})
    assert override.status_code == 303, override.text[:500]

    wider = await owner.post_form(
        page, page, {**form, "auto_approve_reasons": ["duplicate", "technical_issue", "fraudulent"]}
    )
    assert wider.status_code == 422, wider.text[:500]
    error = re.search(r'<p class="field-error" id="auto_approve_reasons-error">(.*?)</p>', wider.text, re.S)
    assert error is not None and "fraudulent" in text_of(error.group(1)), wider.text
    policy = (await intake.client.get("/v1/refund-policy", headers=merchant)).json()
    assert policy["policy"]["refund_window_days"] == 21 and policy["policy"]["auto_approve"]["reasons"] == [
        "duplicate",
        "technical_issue",
    ]
    assert policy["product_overrides"]["prod_course"]["process_time"] == "2 days"
