"""`make dev`'s demo merchant: created once, on the first start, through the public API as the platform would
(the admin token registers payments; the merchant's key asks for refunds). Its owner's invite link is printed;
it is kept under var/ so later starts can print it again until it is used."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

OWNER_EMAIL = "owner@acme.example"
_CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com", 4_999, 2, "prod_ebook", "Design e-book", "digital"),
    ("Grace Hopper", "grace@example.net", 12_900, 5, "prod_course", "Video course", "digital"),
    ("Alan Turing", "alan@example.org", 2_500, 9, "prod_kit", "Starter kit", "consumable"),
    ("Katherine Johnson", "katherine@example.com", 8_900, 20, "prod_course", "Video course", "digital"),
    ("Edsger Dijkstra", "edsger@example.nl", 19_900, 1, "prod_ebook", "Design e-book", "digital"),
]
_REQUESTS: list[tuple[int, str, int | None]] = [
    (0, "product_not_as_described", None),
    (2, "technical_issue", 1_000),
    (3, "requested_by_customer", None),
]


@dataclass(frozen=True)
class DemoAccount:
    merchant_id: str
    owner_email: str
    invite_url: str
    portal_url: str | None = None  # a demo customer's link to the customer portal (older records have none)


def wait_until_ready(api: httpx.Client, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.get("/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return False


def demo_account(api_url: str, admin_token: str, var_dir: Path) -> DemoAccount | None:
    """The demo merchant, created on the first start (None when intake never became ready)."""
    record = var_dir / "demo-merchant.json"
    if record.exists():
        return DemoAccount(**json.loads(record.read_text()))
    with httpx.Client(base_url=api_url, timeout=20) as api:
        if not wait_until_ready(api):
            return None
        account = _create(api, {"Authorization": f"Bearer {admin_token}"})
    record.write_text(json.dumps(account.__dict__))
    record.chmod(0o600)  # the invite link is a credential until it is used
    return account


def _create(api: httpx.Client, admin: dict[str, str]) -> DemoAccount:
    created = api.post("/v1/merchants", headers=admin, json={"name": "Acme Software", "owner_email": OWNER_EMAIL})
    created.raise_for_status()
    merchant: dict[str, Any] = created.json()
    key = {"Authorization": f"Bearer {merchant['api_key']}"}
    now = datetime.now(UTC)
    payments = []
    for name, email, amount, days_ago, product_id, product, category in _CUSTOMERS:
        body = {
            "merchant_id": merchant["id"],
            "customer_email": email,
            "customer_name": name,
            "amount": amount,
            "currency": "EUR",
            "provider_payment_id": f"pi_demo_{uuid.uuid4().hex[:14]}",
            "paid_at": (now - timedelta(days=days_ago)).isoformat(),
            "product": {"id": product_id, "name": product, "kind": "one_time", "category": category},
        }
        answer = api.post("/v1/payments", headers=admin, json=body)
        answer.raise_for_status()
        payments.append(answer.json())
    start = now - timedelta(days=12)
    subscription = api.post(
        "/v1/payments",
        headers=admin,
        json={
            "merchant_id": merchant["id"],
            "customer_email": "barbara@example.com",
            "customer_name": "Barbara Liskov",
            "amount": 2_900,
            "currency": "EUR",
            "provider_payment_id": f"pi_demo_{uuid.uuid4().hex[:14]}",
            "paid_at": start.isoformat(),
            "product": {"id": "prod_pro", "name": "Pro plan (monthly)", "kind": "subscription", "category": "service"},
            "subscription": {
                "id": f"sub_demo_{uuid.uuid4().hex[:10]}",
                "current_period_start": start.isoformat(),
                "current_period_end": (start + timedelta(days=30)).isoformat(),
            },
        },
    )
    subscription.raise_for_status()
    payments.append(subscription.json())
    for index, reason, asked in [*_REQUESTS, (len(payments) - 1, "unexpected_renewal", None)]:
        body = {"payment_id": payments[index]["id"], "reason": reason} | ({"amount": asked} if asked else {})
        api.post("/v1/refunds", headers={**key, "Idempotency-Key": uuid.uuid4().hex}, json=body).raise_for_status()
    # Edsger's link, as the merchant would put it in a receipt: the portal page of a payment with no request yet.
    link = api.post(f"/v1/payments/{payments[4]['id']}/portal-token", headers=key, json={"expires_in_hours": 2160})
    link.raise_for_status()
    return DemoAccount(
        merchant_id=merchant["id"],
        owner_email=OWNER_EMAIL,
        invite_url=merchant["owner_invite_url"],
        portal_url=link.json()["url"],
    )


def banner(account: DemoAccount, api_url: str) -> str:
    return (
        "\nDashboard: "
        f"{api_url}/dashboard/  (demo merchant 'Acme Software', with payments and pending refund requests)\n"
        f"  first time: set the owner's password at {account.invite_url}\n"
        f"  (one use, valid 72 h from the first start); then sign in as {account.owner_email}\n"
    ) + (f"Customer portal (a demo customer's link, 90 days): {account.portal_url}\n" if account.portal_url else "")
