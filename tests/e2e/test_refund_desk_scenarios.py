"""The refund desk's seed scenarios through HTTP, with every service running as its own process."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from refundflow_shared.events import topic_for
from tests.e2e import test_refund_end_to_end as base
from tests.support.kafka_reader import read_topic
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
stack = base.stack  # the same stack of processes, started once for this module
Stack = base.Stack


def merchant_api(stack: Stack) -> tuple[httpx.Client, dict[str, str]]:
    api = httpx.Client(base_url=stack.intake_url, timeout=10)
    created = api.post("/v1/merchants", json={"name": "Acme"}, headers=base.ADMIN)
    base.MERCHANT_IDS[created.json()["api_key"]] = created.json()["id"]
    return api, {"Authorization": f"Bearer {created.json()['api_key']}"}


def register(api: httpx.Client, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    """The platform registers a payment of the merchant's."""
    paid_at = datetime.now(UTC) - timedelta(days=3)
    body = {
        "merchant_id": base.MERCHANT_IDS[auth["Authorization"].removeprefix("Bearer ")],
        "customer_email": "ada@example.com",
        "customer_name": "Ada",
        "amount": 4_999,
        "currency": "EUR",
        "provider_payment_id": f"pi_e2e_{uuid.uuid4().hex[:12]}",
        "paid_at": paid_at.isoformat(),
        "product": {"id": "prod_ebook", "name": "E-book", "kind": "one_time", "category": "digital"},
        **fields,
    }
    response = api.post("/v1/payments", headers=base.ADMIN, json=body)
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def subscription(days: int = 28) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=3)
    return {
        "paid_at": start.isoformat(),
        "product": {"id": "prod_monthly", "name": "Monthly", "kind": "subscription", "category": "service"},
        "subscription": {
            "id": f"sub_{uuid.uuid4().hex[:10]}",
            "current_period_start": start.isoformat(),
            "current_period_end": (start + timedelta(days=days)).isoformat(),
        },
    }


def succeeded(api: httpx.Client, auth: dict[str, str], refund_id: str) -> dict[str, Any]:
    final: dict[str, Any] = wait_for(
        lambda: (r := api.get(f"/v1/refunds/{refund_id}", headers=auth).json())["status"] == "succeeded" and r
    )
    return final


def events_about(stack: Stack, event_type: str, refund_id: str) -> list[dict[str, Any]]:
    records = asyncio.run(read_topic(stack.kafka, topic_for(event_type, stack.prefix), expected=1, timeout=20))
    return [data for r in records if (data := json.loads(r.value or b"")).get("refund_id") == refund_id]


def mail_mentioning(stack: Stack, refund_id: str) -> EmailMessage:
    def find() -> list[EmailMessage]:
        found = []
        for path in stack.mail_dir.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            # The notifier also acknowledges the request; the confirmation is the mail about the money.
            subject = message["Subject"].lower()
            confirms = "on its way" in subject or "refunded" in subject
            if body is not None and refund_id in body.get_content() and confirms:
                found.append(message)
        return found

    return wait_for(find)[0]


def test_a_digital_product_within_the_window_is_refunded_in_full_with_a_confirmation(stack: Stack) -> None:
    api, auth = merchant_api(stack)
    payment = register(api, auth)
    refund = api.post(
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "technical_issue"},
    )
    assert (refund.json()["amount"], refund.json()["flags"]) == (4_999, [])
    api.post(f"/v1/refunds/{refund.json()['id']}/approve", headers=auth)

    final = succeeded(api, auth, refund.json()["id"])

    assert [t["status"] for t in final["timeline"]] == ["pending", "processing", "succeeded"]
    paid = api.get(f"/v1/payments/{payment['id']}", headers=auth).json()
    assert (paid["status"], paid["refundable_amount"]) == ("refunded", 0)
    assert api.get("/v1/balance", headers=auth).json()["data"] == [
        {"currency": "EUR", "paid": 4_999, "refunded": 4_999, "held": 0, "available": 0}
    ]
    confirmation = mail_mentioning(stack, refund.json()["id"])
    assert confirmation["To"] == "ada@example.com"
    assert "49.99" in confirmation["Subject"]


def test_a_first_month_subscription_refund_cancels_the_subscription(stack: Stack) -> None:
    api, auth = merchant_api(stack)
    payment = register(api, auth, amount=2_900, **subscription())
    refund = api.post(
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "unexpected_renewal"},
    )
    approved = api.post(f"/v1/refunds/{refund.json()['id']}/approve", headers=auth)
    assert approved.json()["subscription_action"] == "refund_and_cancel"

    succeeded(api, auth, refund.json()["id"])

    [cancel] = events_about(stack, "subscription.cancel_requested", refund.json()["id"])
    assert (cancel["subscription_id"], cancel["at_period_end"]) == (payment["subscription"]["id"], False)


def test_a_week_of_downtime_refunds_a_quarter_and_grants_a_week(stack: Stack) -> None:
    api, auth = merchant_api(stack)
    payment = register(api, auth, amount=2_000, **subscription(days=28))
    quote = api.post(
        "/v1/refunds/quote", headers=auth, json={"payment_id": payment["id"], "proration": {"affected_days": 7}}
    )
    assert quote.json()["amount"] == 500
    refund = api.post(
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "service_disruption", "proration": {"affected_days": 7}},
    )
    assert refund.json()["amount"] == 500
    api.post(
        f"/v1/refunds/{refund.json()['id']}/approve",
        headers=auth,
        json={"subscription_action": "refund_only", "extend_days": 7, "note": "Sorry for the outage"},
    )

    succeeded(api, auth, refund.json()["id"])

    paid = api.get(f"/v1/payments/{payment['id']}", headers=auth).json()
    assert (paid["status"], paid["refunded_amount"]) == ("partially_refunded", 500)
    [extension] = events_about(stack, "subscription.extension_granted", refund.json()["id"])
    assert extension["days"] == 7
    assert events_about(stack, "subscription.cancel_requested", refund.json()["id"]) == []
