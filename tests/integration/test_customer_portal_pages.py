"""The customer portal's pages over HTTP (no browser): the link from the portal-token call opens the payment with
the policy in plain words, the form asks (CSRF, rate limits, the same rules as the API), the page follows the
request in the customer's words; foreign, tampered and expired links show nothing; the merchant's switch; the
hosted policy, cached, and its embeddable version the only page other sites may frame. The browser tests
(tests/browser/test_customer_portal.py) walk the same from the customer's email; hostile links and forms are in
tests/hostile/test_intake_portal_pages.py."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest

from refundflow_shared.events import SubscriptionCanceled, SubscriptionExtended
from refundflow_shared.secret_box import SecretBox
from tests.support.dashboard_people import csrf_of, merchant_with_owner
from tests.support.intake_harness import IntakeUnderTest, running_intake
from tests.support.portal_customers import Customer, hidden_fields, link_for, text_of
from tests.support.probe_service import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap, portal_public_url="https://refunds.acme.test") as running:
        yield running


async def test_the_link_opens_the_payment_with_the_policy_in_plain_words_and_says_it_is_within_the_window(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=4_999)
    link = await link_for(intake, merchant, payment["id"])
    assert link["url"] == f"https://refunds.acme.test/portal/{link['token']}"

    page = await Customer(intake, link["url"]).open()

    assert page.status_code == 200
    seen = text_of(page.text)
    assert "Your purchase from Acme" in seen and "Pro plan" in seen and "€49.99" in seen
    assert "you are within the 14-day refund window" in seen
    assert "You can ask for a refund within 14 days of your purchase." in seen
    assert "Not refundable: consumable, customized products." in seen
    assert "Approved refunds reach your original payment method within 5–10 business days." in seen
    assert "Request a refund" in seen and "I changed my mind" in seen
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (page.headers["cache-control"], page.headers["referrer-policy"]) == ("no-store", "no-referrer")


async def test_a_subscriptions_customer_chooses_to_keep_or_cancel_it_nothing_is_chosen_for_them(
    intake: IntakeUnderTest,
) -> None:
    """The "Cancel it too" choice was ticked in advance: a customer asking for a small refund who did not notice it
    lost their subscription at once, with no person involved when the merchant's rules approved it."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    page = await customer.open()
    radios = re.findall(r'<input type="radio" name="subscription"[^>]*>', page.text)
    assert len(radios) == 2 and not [r for r in radios if "checked" in r], radios
    unchosen = await customer.ask(reason="duplicate", amount="5")

    assert unchosen.status_code == 422
    seen = text_of(unchosen.text)
    assert "Please choose whether to keep your subscription or cancel it." in seen
    radios = re.findall(r'<input type="radio" name="subscription"[^>]*>', unchosen.text)
    assert all('aria-invalid="true"' in r and 'aria-describedby="subscription-error"' in r for r in radios)
    assert "autofocus" in radios[0], "the customer is put on the choice to make"
    assert (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"] == []
    chosen = await customer.ask(reason="duplicate", amount="5", subscription="cancel")
    assert chosen.status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()["cancel_subscription"]


async def test_a_customer_asks_sees_it_pending_then_the_merchants_words_when_it_is_rejected(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    sent = await customer.ask(reason="technical_issue", details="The export crashes", amount="20", subscription="keep")

    assert sent.status_code == 303
    page = await customer.browser.get(sent.headers["location"])
    seen = text_of(page.text)
    assert "Thank you: your request is sent." in seen
    assert "Refund request for €20.00 Pending" in seen and "Acme is reviewing your request." in seen
    assert "You asked for a refund of €20.00" in seen and "The export crashes" in seen
    assert "Request a refund" not in seen, "one open request at a time"
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    merchant_view = (await intake.client.get(f"/v1/refunds/{refund['id']}", headers=merchant)).json()
    assert (merchant_view["channel"], merchant_view["cancel_subscription"]) == ("portal", False)
    status_url = re.search(r'data-status-url="([^"]+)"', page.text)
    assert status_url is not None
    assert (await customer.browser.get(status_url.group(1))).json()["status"] == "pending"

    note = "The export is part of the Pro plan; we have switched it on for you."
    await intake.client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant, json={"note": note})
    state = (await customer.browser.get(status_url.group(1))).json()
    assert (state["status"], state["label"], state["final"]) == ("rejected", "Rejected", True)
    assert note in state["html"] and "Acme decided not to refund this request" in text_of(state["html"])


async def test_a_rejection_of_a_customer_who_asked_to_cancel_too_says_the_subscription_goes_on_as_the_email_does(
    intake: IntakeUnderTest,
) -> None:
    """The page said only "decided not to refund": the customer who chose "Cancel it too" could believe it
    cancelled until it renewed."""
    merchant = await intake.merchant()
    payment = await intake.subscription_payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    assert (await customer.ask(reason="duplicate", amount="5", subscription="cancel")).status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    page = await customer.open()
    assert "You asked for a refund of €5.00 and to cancel your subscription" in text_of(page.text)
    status_url = re.search(r'data-status-url="([^"]+)"', page.text)
    assert status_url is not None

    await intake.client.post(f"/v1/refunds/{refund['id']}/reject", headers=merchant, json={})

    [rejected] = await intake.staged("refund.rejected", payment["id"])
    assert rejected["subscription_continues"] is True
    seen = text_of((await customer.browser.get(status_url.group(1))).json()["html"])
    assert "Acme decided not to refund this request." in seen
    assert "You also asked to cancel your subscription: it continues, and renews as usual." in seen
    assert "You asked for a refund of €5.00 and to cancel your subscription" in seen


async def test_a_customer_who_keeps_the_subscription_or_whose_wish_is_carried_out_reads_no_such_line(
    intake: IntakeUnderTest,
) -> None:
    for wish, action in (("keep", "refund_only"), ("cancel", "refund_and_cancel")):
        merchant = await intake.merchant()
        payment = await intake.subscription_payment(merchant)
        customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
        assert (await customer.ask(reason="duplicate", amount="5", subscription=wish)).status_code == 303
        [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
        approve = {"subscription_action": action}
        await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json=approve)
        seen = text_of((await customer.open()).text)
        assert "Acme approved a refund of €5.00" in seen
        assert ("and to cancel your subscription" in seen) == (wish == "cancel")
        assert "it continues" not in seen


async def test_only_what_a_decision_told_the_customer_is_shown_never_the_teams_note_or_who_acted(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    assert (await customer.ask(reason="duplicate", amount="100")).status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    await intake.client.post(
        f"/v1/refunds/{refund['id']}/approve",
        headers=merchant,
        json={"amount": 6_000, "note": "VIP, do not argue", "note_to_customer": "Half of it was a real renewal."},
    )

    seen = text_of((await customer.open()).text)
    assert "Acme approved a refund of €60.00 of the €100.00 you asked for" in seen
    assert "Half of it was a real renewal." in seen
    assert "VIP" not in seen and "api_key" not in seen and "key_" not in seen, "nothing of who acted or why"


async def test_the_forms_address_opened_again_leads_to_the_page(intake: IntakeUnderTest) -> None:
    """A page with an error in the form has the form's address: reloaded or opened again later, it answered 405
    "This page cannot be shown"."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    assert (await customer.ask(reason="")).status_code == 422

    again = await customer.browser.get(f"{customer.path}/requests")

    assert (again.status_code, again.headers["location"]) == (303, customer.path)
    assert "Your purchase from Acme" in text_of((await customer.browser.get(again.headers["location"])).text)


async def test_the_same_form_sent_twice_makes_one_refund_even_when_the_policy_approves_it_at_once(
    intake: IntakeUnderTest,
) -> None:
    """A double click, or the same page sent from two tabs: approved at once, the first no longer holds the payment's
    one open request, and the second made another refund."""
    merchant = await intake.merchant()
    rule = {"max_amount": {"amount": 5000, "currency": "EUR"}, "reasons": ["duplicate"]}
    assert (await intake.client.put("/v1/refund-policy", headers=merchant, json={"auto_approve": rule})).is_success
    payment = await intake.payment(merchant, amount=10_000)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    form = {**hidden_fields((await customer.open()).text), "reason": "duplicate", "amount": "20.00"}

    def send() -> Any:
        return customer.browser.post(f"{customer.path}/requests", data=form)

    first, second = await asyncio.gather(send(), send())
    later = await send()  # the same page sent again once the first was answered: back, then send

    assert [a.status_code for a in (first, second, later)] == [303, 303, 303]
    assert first.headers["location"] == second.headers["location"] == later.headers["location"]
    refunds = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert [(r["amount"], r["status"]) for r in refunds] == [(2000, "processing")]

    changed = await customer.browser.post(f"{customer.path}/requests", data={**form, "amount": "30.00"})
    assert changed.status_code == 409, changed.text[:300]
    assert "This form was already sent" in text_of(changed.text) and 'value="30.00"' in changed.text
    another = await customer.ask(reason="duplicate", amount="30.00")  # a new page: a new request, as before
    assert another.status_code == 303
    refunds = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert sorted(r["amount"] for r in refunds) == [2000, 3000]


async def test_details_with_line_breaks_count_as_the_browser_counts_them_and_too_long_are_asked_again_kept(
    intake: IntakeUnderTest,
) -> None:
    """A browser counts a line break as one character against the textarea's maxlength but sends two (CRLF)."""
    merchant = await intake.merchant()
    payment, other_payment = await intake.payment(merchant), await intake.payment(merchant)
    typed = "\r\n".join(["x" * 29] * 66)  # 1979 characters as the browser counts them, 2044 as it sends them

    sent = await Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"]).ask(
        reason="other", details=typed
    )

    assert sent.status_code == 303, text_of(sent.text)[:300]
    stored = await intake.db.fetchval("SELECT reason_details FROM refunds WHERE payment_id = $1", payment["id"])
    assert stored == typed.replace("\r\n", "\n")

    long = "y" * 2001
    customer = Customer(intake, (await link_for(intake, merchant, other_payment["id"]))["url"])
    refused = await customer.ask(reason="other", details=long)
    assert refused.status_code == 422
    assert "What happened is 2001 characters long: please shorten it to 2000 at most." in text_of(refused.text)
    assert f">{long}</textarea>" in refused.text, "what they wrote is still there"
    absurd = await customer.ask(reason="other", details="z" * 100_000)
    assert absurd.status_code == 422
    assert await intake.db.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", other_payment["id"]) == 0


async def test_an_amount_of_nothing_is_asked_for_again_not_called_more_than_refundable(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    refused = await customer.ask(reason="duplicate", amount="0")

    assert refused.status_code == 422
    seen = text_of(refused.text)
    assert "Enter an amount such as 12.50, or leave it empty to ask for everything." in seen
    assert "more than can still be refunded" not in seen
    assert (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"] == []


async def test_an_amount_stripe_cannot_refund_exactly_is_asked_for_again_in_its_steps(intake: IntakeUnderTest) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, amount=10_000, currency="KWD")
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    refused = await customer.ask(reason="duplicate", amount="3.333")

    assert refused.status_code == 422
    assert "can only be refunded in steps of KWD 0.010" in text_of(refused.text)
    assert (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"] == []


@pytest.mark.parametrize(("currency", "example"), [("JPY", "1500"), ("KWD", "12.500"), ("MGA", "13.00")])
async def test_an_amount_the_currency_cannot_hold_is_asked_for_again_with_an_example_in_that_currency(
    intake: IntakeUnderTest, currency: str, example: str
) -> None:
    merchant = await intake.merchant()
    payment = await intake.payment(merchant, currency=currency, amount=50_000)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    refused = await customer.ask(reason="duplicate", amount="12.5055")

    assert refused.status_code == 422
    assert f"Enter an amount such as {example}, or leave it empty to ask for everything." in text_of(refused.text)


async def test_outside_the_window_and_excluded_the_page_says_so_and_the_customer_may_still_ask(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    paid = (intake.clock() - timedelta(days=40)).isoformat()
    product = {"id": "prod_kit", "name": "Starter kit", "kind": "one_time", "category": "consumable"}
    payment = await intake.payment(merchant, paid_at=paid, product=product)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    seen = text_of((await customer.open()).text)
    assert "the 14-day refund window ended on" in seen
    assert "Acme's policy does not normally refund consumable products, like this one." in seen
    assert "You can still ask: Acme reads every request and decides." in seen

    assert (await customer.ask(reason="product_not_as_described")).status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert set(refund["flags"]) == {"outside_refund_window", "excluded_category"}


async def test_the_owner_switches_the_portal_off_and_links_requests_and_emails_answer_accordingly(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    page_before = await customer.open()

    saved = await owner.post_form("/dashboard/settings", "/dashboard/settings/portal", {"enabled": "false"})
    assert saved.status_code == 303
    # The notifier is told, with the merchant's settings: emails about outcomes the processor publishes later
    # carry the decision's link, which it leaves out from now on.
    merchant_id = await intake.merchant_id(merchant)
    [told] = await intake.staged("notification_settings.configured", merchant_id)
    assert (told["portal_enabled"], told["reply_to"]) == (False, None)

    closed = await customer.open()
    assert closed.status_code == 200 and "Online refund requests are closed" in closed.text
    assert "Acme does not take refund requests online at the moment." in text_of(closed.text)
    assert "Reply to" not in closed.text, "no reply-to set: a reply would reach the platform, not Acme"
    posted = await customer.browser.post(
        f"{customer.path}/requests", data={"csrf_token": csrf_of(page_before.text), "reason": "duplicate"}
    )
    assert posted.status_code == 409 and "Online refund requests are closed" in posted.text
    no_token = await intake.client.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant)
    assert no_token.status_code == 409 and no_token.json()["error"]["code"] == "portal_disabled"
    # The merchant's own request still reaches the customer, by email, without a link.
    refund = await intake.refund(merchant, payment["id"], amount=100)
    [requested] = await intake.staged("refund.requested", payment["id"])
    assert requested["refund_id"] == refund["id"] and requested["portal_link"] is None
    assert requested["merchant_name"] == "Acme"

    await owner.post_form("/dashboard/settings", "/dashboard/settings/portal", {"enabled": "true"})
    assert [
        told["portal_enabled"] for told in await intake.staged("notification_settings.configured", merchant_id)
    ] == [
        False,
        True,
    ]
    reopened = text_of((await customer.open()).text)
    assert "Request a refund" in reopened and "€1.00" not in reopened, "the merchant's own refund is not shown"


async def test_customer_facing_events_carry_the_sealed_link_the_merchants_name_and_the_policys_process_time(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    await intake.client.put("/v1/refund-policy", headers=merchant, json={"process_time": "3 business days"})
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])
    assert (await customer.ask(reason="duplicate", amount="80")).status_code == 303
    [refund] = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    await intake.client.post(f"/v1/refunds/{refund['id']}/approve", headers=merchant, json={"amount": 5_000})

    [requested] = await intake.staged("refund.requested", payment["id"])
    [approved] = await intake.staged("refund.approved", payment["id"])
    assert (requested["channel"], requested["auto_approved"], requested["merchant_name"]) == ("portal", False, "Acme")
    assert (approved["requested_amount"], approved["amount"], approved["process_time"]) == (
        8_000,
        5_000,
        "3 business days",
    )
    assert (approved["channel"], approved["auto_approved"]) == ("portal", False), "the customer was told: received"
    key = intake.settings.webhook_secret_key
    assert key is not None
    url = SecretBox(key.get_secret_value()).open(approved["portal_link"]["sealed_url"], context=payment["id"])
    assert url.startswith("https://refunds.acme.test/portal/pt_")
    again = await Customer(intake, url).open()
    assert again.status_code == 200 and "Acme approved a refund of €50.00" in text_of(again.text)
    assert json.dumps(requested).count("https://") == 0, "the link travels sealed only"


async def test_the_hosted_policy_is_cached_and_only_its_embeddable_version_may_be_framed(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)

    page = await intake.client.get(f"/policy/{merchant_id}")
    embed = await intake.client.get(f"/policy/{merchant_id}/embed")
    again = await intake.client.get(f"/policy/{merchant_id}", headers={"If-None-Match": page.headers["etag"]})
    dashboard = await intake.client.get("/dashboard/login")
    unknown = await intake.client.get("/policy/mer_nobody")

    assert page.status_code == 200 and "You can ask for a refund within 14 days" in page.text
    assert page.headers["cache-control"] == "public, max-age=60" and again.status_code == 304
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert embed.status_code == 200 and "Refund policy · Acme" in embed.text
    assert "frame-ancestors *" in embed.headers["content-security-policy"] and "x-frame-options" not in embed.headers
    assert dashboard.headers["x-frame-options"] == "DENY"
    assert unknown.status_code == 404

    await intake.client.put("/v1/refund-policy", headers=merchant, json={"refund_window_days": 30})
    assert "within 30 days" in (await intake.client.get(f"/policy/{merchant_id}/embed")).text


async def test_the_policy_on_its_own_page_is_the_products_from_the_portal_its_closed_page_and_the_embed(
    intake: IntakeUnderTest,
) -> None:
    merchant, owner = await merchant_with_owner(intake)
    merchant_id = await intake.merchant_id(merchant)
    product_id = "pro&plan #1"  # ids are any one line: the links encode it
    override = f"/v1/refund-policy/products/{quote(product_id, safe='')}"
    assert (await intake.client.put(override, headers=merchant, json={"refund_window_days": 7})).is_success
    product = {"id": product_id, "name": "Pro plan", "kind": "one_time", "category": "digital"}
    payment = await intake.payment(merchant, product=product)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    def link(html: str, words: str) -> str:
        found = re.search(rf'<a href="([^"]+)"[^>]*>{words}', html)
        assert found, words
        return unescape(found.group(1))

    portal = link((await customer.open()).text, "The policy on its own page")
    embed = await intake.client.get(f"/policy/{merchant_id}/embed", params={"product_id": product_id})
    full = link(embed.text, "The full policy")
    switched = await owner.post_form("/dashboard/settings", "/dashboard/settings/portal", {"enabled": "false"})
    assert switched.status_code == 303
    closed = link((await customer.open()).text, "Read Acme's refund policy")

    for url in (portal, full, closed):
        policy = await intake.client.get(url)
        assert policy.status_code == 200 and "within 7 days" in text_of(policy.text), url


async def test_each_family_of_pages_carries_its_security_headers_and_the_api_carries_none(
    intake: IntakeUnderTest,
) -> None:
    merchant = await intake.merchant()
    sign_in = await intake.client.get("/dashboard/login")
    dashboard_style = await intake.client.get("/dashboard/static/dashboard.css")
    portal_style = await intake.client.get("/portal/static/portal.css")
    api = await intake.client.get("/v1/refund-policy", headers=merchant)

    for response in (sign_in, dashboard_style, portal_style):
        assert response.status_code == 200
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert (response.headers["x-frame-options"], response.headers["referrer-policy"]) == ("DENY", "no-referrer")
    assert sign_in.headers["cache-control"] == "no-store"
    assert "no-store" not in dashboard_style.headers.get("cache-control", "")
    assert "no-store" not in portal_style.headers.get("cache-control", "")
    assert api.status_code == 200 and "content-security-policy" not in api.headers


async def test_the_subscription_line_follows_what_the_provider_did_after_an_extension_or_a_cancellation(
    intake: IntakeUnderTest,
) -> None:
    """The page said "Current period until" the paid period's end for ever: after a week of goodwill the next
    payment is a week later, and after a cancellation there is no next payment at all."""
    merchant = await intake.merchant()
    merchant_id = await intake.merchant_id(merchant)
    extended = await intake.subscription_payment(merchant)
    cancelled = await intake.subscription_payment(merchant)
    period_end = datetime.fromisoformat(extended["subscription"]["current_period_end"])
    later = period_end + timedelta(days=7)

    await intake.publish(
        SubscriptionExtended(
            payment_id=extended["id"], merchant_id=merchant_id, subscription_id=extended["subscription"]["id"],
            days=7, current_period_end=later,
        ),
        source="refundflow/processor",
    )  # fmt: skip
    await intake.publish(
        SubscriptionCanceled(
            payment_id=cancelled["id"], merchant_id=merchant_id, subscription_id=cancelled["subscription"]["id"],
            at_period_end=False, ends_at=None,
        ),
        source="refundflow/processor",
    )  # fmt: skip

    async def told(payment: dict[str, Any], words: str) -> bool:
        page = await Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"]).open()
        return words in text_of(page.text)

    await eventually(lambda: told(extended, f"Current period until {later.day} {later.strftime('%B %Y')}"), timeout=30)
    await eventually(lambda: told(cancelled, "Cancelled: no further payments"), timeout=30)
    assert not await told(cancelled, "Current period until")
    assert not await told(cancelled, "Your subscription"), "no choice to cancel or keep what has ended"
    assert await told(extended, "Your subscription")


async def test_an_earlier_invoices_page_shows_the_subscriptions_latest_period_not_its_own_past_one(
    intake: IntakeUnderTest,
) -> None:
    """January's invoice, opened in March, said "Current period until" February's first day, a date gone by: the
    subscription had renewed since, and runs to its latest payment's period end (or the goodwill beyond it)."""
    merchant = await intake.merchant()
    subscription = f"sub_{uuid.uuid4().hex[:12]}"
    product = {"id": "prod_monthly", "name": "Monthly plan", "kind": "subscription", "category": "service"}
    now = intake.clock()
    periods = [(now - timedelta(days=40), now - timedelta(days=10)), (now - timedelta(days=10), now + timedelta(20))]
    first, renewal = [
        await intake.payment(
            merchant,
            paid_at=start.isoformat(),
            product=product,
            subscription={
                "id": subscription,
                "current_period_start": start.isoformat(),
                "current_period_end": end.isoformat(),
            },
        )
        for start, end in periods
    ]
    customer = Customer(intake, (await link_for(intake, merchant, first["id"]))["url"])

    latest = periods[1][1]
    seen = text_of((await customer.open()).text)
    assert f"Current period until {latest.day} {latest.strftime('%B %Y')}" in seen
    assert "Keep it It renews as usual" in seen, "the choice is about the subscription as it runs now"
    assert (await customer.ask(reason="duplicate", amount="5", subscription="keep")).status_code == 303
    status_url = re.search(r'data-status-url="([^"]+)"', (await customer.open()).text)
    assert status_url is not None
    facts = text_of((await customer.browser.get(status_url.group(1))).json()["payment_html"])
    assert facts == f"Subscription Current period until {latest.day} {latest.strftime('%B %Y')}"

    goodwill = latest + timedelta(days=7)
    await intake.publish(
        SubscriptionExtended(
            payment_id=renewal["id"], merchant_id=await intake.merchant_id(merchant), subscription_id=subscription,
            days=7, current_period_end=goodwill,
        ),
        source="refundflow/processor",
    )  # fmt: skip

    async def told(words: str) -> bool:
        return words in text_of((await customer.open()).text)

    await eventually(lambda: told(f"Current period until {goodwill.day} {goodwill.strftime('%B %Y')}"), timeout=30)


async def test_an_amount_typed_as_the_page_shows_amounts_is_read(intake: IntakeUnderTest) -> None:
    """The page shows "$5,000.00"; a customer typing "$1,234.56" was refused, and "1,500" yen was told to type
    "1.500", which yen refused too."""
    merchant = await intake.merchant()
    dollars = await intake.payment(merchant, amount=500_000, currency="USD")
    customer = Customer(intake, (await link_for(intake, merchant, dollars["id"]))["url"])
    assert "$5,000.00" in text_of((await customer.open()).text)
    asked = await customer.ask(reason="duplicate", amount="$1,234.56")
    assert asked.status_code == 303, text_of(asked.text)[:500]
    yen = await intake.payment(merchant, amount=5_000, currency="JPY")
    customer = Customer(intake, (await link_for(intake, merchant, yen["id"]))["url"])
    asked = await customer.ask(reason="duplicate", amount="1,500")
    assert asked.status_code == 303, text_of(asked.text)[:500]
    refunds = (await intake.client.get("/v1/refunds", headers=merchant)).json()["data"]
    assert sorted((r["amount"], r["currency"]) for r in refunds) == [(1_500, "JPY"), (123_456, "USD")]


async def test_the_page_title_names_the_purchase_and_says_when_the_form_was_refused(intake: IntakeUnderTest) -> None:
    """Every portal page was titled "Your purchase · Acme": a customer with two tabs open (or their screen reader's
    list of windows) could not tell which purchase each was, nor that the page came back refusing the form."""
    merchant = await intake.merchant()
    payment = await intake.payment(merchant)
    customer = Customer(intake, (await link_for(intake, merchant, payment["id"]))["url"])

    assert _title(await customer.open()) == "Your Pro plan purchase · Acme"
    refused = await customer.ask(reason="duplicate", amount="9999")
    assert refused.status_code == 422
    assert _title(refused) == "Error: Your Pro plan purchase · Acme"


def _title(page: Any) -> str:
    found = re.search(r"<title>(.*?)</title>", page.text, re.S)
    assert found, page.text[:300]
    return unescape(found.group(1)).strip()
