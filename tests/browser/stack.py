"""The whole system for the browser tests and `make screenshots`: intake, processor, notifier and the provider
sandbox as processes, an SMTP sink writing .eml files, on a real broker and PostgreSQL. Started once per module."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx

from refundflow_devstack.smtp_sink import start_smtp_sink
from refundflow_shared.secret_box import generate_key
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, service_env

T = TypeVar("T")
ADMIN_TOKEN = "browser-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "correct horse battery staple"
WEBHOOK_SECRET = "whsec_browser_stack"


class Stack:
    def __init__(
        self,
        intake_url: str,
        mail_dir: Path,
        sandbox_url: str,
        database_url: str = "",
        kafka: tuple[str, str] = ("", ""),
    ) -> None:
        self.url, self.mail_dir, self.database_url = intake_url, mail_dir, database_url
        self.kafka_bootstrap, self.topic_prefix = kafka  # for tests that write to the stack's topics themselves
        self.api = httpx.Client(base_url=intake_url, timeout=20)
        self.sandbox = httpx.Client(base_url=sandbox_url, timeout=20, auth=("sk_test_browser", ""))

    def merchant(self, name: str = "Acme Software", owner_email: str | None = None) -> dict[str, Any]:
        """A merchant with its first owner invited: id, api_key, owner_invite_url, owner_email, auth."""
        owner_email = owner_email or f"owner-{uuid.uuid4().hex[:8]}@acme.example"
        created = self.api.post("/v1/merchants", json={"name": name, "owner_email": owner_email}, headers=ADMIN)
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        return {**body, "owner_email": owner_email, "auth": {"Authorization": f"Bearer {body['api_key']}"}}

    def payment(self, merchant: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A payment the platform registers for the merchant."""
        body = {
            "merchant_id": merchant["id"],
            "customer_email": f"ada.{uuid.uuid4().hex[:6]}@example.com",
            "customer_name": "Ada Lovelace",
            "amount": 4_999,
            "currency": "EUR",
            "provider_payment_id": f"pi_browser_{uuid.uuid4().hex[:12]}",
            "paid_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            "product": {"id": "prod_ebook", "name": "Design e-book", "kind": "one_time", "category": "digital"},
            **fields,
        }
        answer = self.api.post("/v1/payments", headers=ADMIN, json=body)
        assert answer.status_code == 201, answer.text
        payment: dict[str, Any] = answer.json()
        return payment

    def subscription_payment(self, merchant: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A payment for a monthly subscription, with the period the provider holds (the sandbox's: 30 days from
        its first sight of it), as billing would report it."""
        subscription_id = f"sub_{uuid.uuid4().hex[:10]}"
        held = self.sandbox.get(f"/v1/subscriptions/{subscription_id}").json()
        start = datetime.fromtimestamp(held["current_period_start"], UTC)
        end = datetime.fromtimestamp(held["current_period_end"], UTC)
        return self.payment(
            merchant,
            amount=3_000,
            paid_at=start.isoformat(),
            product={"id": "prod_pro", "name": "Pro plan (monthly)", "kind": "subscription", "category": "service"},
            subscription={
                "id": subscription_id,
                "current_period_start": start.isoformat(),
                "current_period_end": end.isoformat(),
            },
            **fields,
        )

    def request_refund(self, merchant: dict[str, Any], payment: dict[str, Any], **fields: Any) -> dict[str, Any]:
        body = {"payment_id": payment["id"], "reason": "requested_by_customer", **fields}
        answer = self.api.post(
            "/v1/refunds", headers={**merchant["auth"], "Idempotency-Key": uuid.uuid4().hex}, json=body
        )
        assert answer.status_code == 201, answer.text
        refund: dict[str, Any] = answer.json()
        return refund

    def customer_requests_refund(self, merchant: dict[str, Any], payment: dict[str, Any]) -> dict[str, Any]:
        """The payment's customer asks, through their portal link (the portal's own API with the link's token)."""
        link = self.api.post(f"/v1/payments/{payment['id']}/portal-token", headers=merchant["auth"])
        assert link.status_code == 201, link.text
        headers = {"Authorization": f"Bearer {link.json()['token']}"}
        asked = self.api.post("/v1/portal/refund-requests", headers=headers, json={"reason": "requested_by_customer"})
        assert asked.status_code == 201, asked.text
        refund: dict[str, Any] = asked.json()
        return refund

    def refund(self, merchant: dict[str, Any], refund_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/v1/refunds/{refund_id}", headers=merchant["auth"]).json()
        return found

    def payment_refunds(self, merchant: dict[str, Any], payment: dict[str, Any]) -> list[dict[str, Any]]:
        answer = self.api.get("/v1/refunds", headers=merchant["auth"], params={"payment_id": payment["id"]})
        refunds: list[dict[str, Any]] = answer.json()["data"]
        return refunds

    def mails_to(self, recipient: str) -> list[EmailMessage]:
        found = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if isinstance(message, EmailMessage) and message["To"] == recipient:
                found.append(message)
        return found


def _in_own_thread(call: Callable[[], T]) -> T:
    """Playwright's sync API runs an event loop in this thread: asyncio work goes to a thread of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


@contextmanager
def running_stack(workdir: Path, postgres_url: str, kafka_bootstrap: str) -> Iterator[Stack]:
    from tests.conftest import create_database

    mail_dir = workdir / "mail"
    smtp_port = free_port()
    smtp = start_smtp_sink(mail_dir, port=smtp_port)
    ports = {name: free_port() for name in ("sandbox", "intake", "processor", "notifier")}
    intake_url = f"http://127.0.0.1:{ports['intake']}"
    common = {
        "DATABASE_URL": _in_own_thread(lambda: asyncio.run(create_database(postgres_url))),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.",
        "REFUNDFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
        "WEBHOOK_SECRET_KEY": generate_key(),
        "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
        "DASHBOARD_COOKIE_SECURE": "false",  # plain http on 127.0.0.1
        "DASHBOARD_PUBLIC_URL": intake_url,
        "STRIPE_API_BASE": f"http://127.0.0.1:{ports['sandbox']}",
        "STRIPE_API_KEY": "sk_test_browser",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_TLS": "none",
        "SANDBOX_PORT": str(ports["sandbox"]),
        "NOTIFIER_URL": f"http://127.0.0.1:{ports['notifier']}",
        "REFUNDFLOW_INTERNAL_TOKEN": "browser-internal-token",  # the dashboard's delivery logs and email previews
        # The provider tells the processor of refunds that fail late (reversals), as Stripe's webhooks do.
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{ports['processor']}/v1/provider-webhooks/stripe",
        "SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SANDBOX_LATE_FAILURE_SECONDS": "2",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.3",
        "MESSAGE_POLL_INTERVAL_SECONDS": "0.3",
    }
    processes = []
    try:
        for name, port in ports.items():
            health = f"http://127.0.0.1:{port}/" + ("healthz" if name == "sandbox" else "readyz")
            env = service_env(**common, HTTP_PORT=str(port))
            processes.append(ServiceProcess(name, [f"refundflow-{name}"], env, workdir, health))
        for process in processes:
            process.wait_ready(timeout=120)
        yield Stack(
            intake_url,
            mail_dir,
            f"http://127.0.0.1:{ports['sandbox']}",
            common["DATABASE_URL"],
            (kafka_bootstrap, common["TOPIC_PREFIX"]),
        )
    finally:
        for process in processes:
            process.stop()
        smtp.stop()
