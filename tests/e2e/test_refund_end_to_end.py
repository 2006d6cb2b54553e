"""One refund end to end: HTTP in, three services as separate processes, the sandbox, an email out."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from refundflow_devstack.smtp_sink import start_smtp_sink
from refundflow_shared.events import topic_for
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import read_topic
from tests.support.service_processes import ServiceProcess, service_env

pytestmark = pytest.mark.e2e
T = TypeVar("T")
ADMIN_TOKEN = "e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MERCHANT_IDS: dict[str, str] = {}  # API key -> merchant id


class Stack:
    def __init__(self, intake_url: str, sandbox_url: str, mail_dir: Path, kafka: str, prefix: str) -> None:
        self.intake_url, self.sandbox_url, self.mail_dir = intake_url, sandbox_url, mail_dir
        self.kafka, self.prefix = kafka, prefix


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[Stack]:
    from tests.conftest import create_database

    workdir = tmp_path_factory.mktemp("e2e")
    mail_dir = workdir / "mail"
    smtp_port = free_port()
    smtp = start_smtp_sink(mail_dir, port=smtp_port)
    database_url = asyncio.run(create_database(postgres_url))
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ports = {name: free_port() for name in ("sandbox", "intake", "processor", "notifier")}
    common = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "REFUNDFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
        "STRIPE_API_BASE": f"http://127.0.0.1:{ports['sandbox']}",
        "STRIPE_API_KEY": "sk_test_e2e",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SANDBOX_PORT": str(ports["sandbox"]),
    }
    processes = []
    try:
        for name, port in ports.items():
            health = f"http://127.0.0.1:{port}/" + ("healthz" if name == "sandbox" else "readyz")
            env = service_env(**common, HTTP_PORT=str(port))
            processes.append(ServiceProcess(name, [f"refundflow-{name}"], env, workdir, health))
        for process in processes:
            process.wait_ready()
        yield Stack(f"http://127.0.0.1:{ports['intake']}", common["STRIPE_API_BASE"], mail_dir, kafka_bootstrap, prefix)
    finally:
        for process in processes:
            process.stop()
        smtp.stop()


def wait_for(check: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout}s")


def test_an_approved_refund_succeeds_at_the_provider_once_and_the_customer_gets_an_email(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.intake_url, timeout=10)
    merchant = api.post("/v1/merchants", json={"name": "Acme"}, headers=ADMIN)
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    provider_payment_id = f"pi_e2e_{uuid.uuid4().hex[:12]}"
    payment = api.post(
        "/v1/payments",
        headers=ADMIN,  # payments come from the platform
        json={
            "merchant_id": merchant.json()["id"],
            "customer_email": "ada@example.com",
            "amount": 4999,
            "currency": "EUR",
            "provider_payment_id": provider_payment_id,
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Pro plan", "kind": "one_time"},
        },
    )
    assert payment.status_code == 201, payment.text
    assert payment.json()["status"] == "paid"
    refund = api.post(
        "/v1/refunds", headers=auth, json={"payment_id": payment.json()["id"], "reason": "requested_by_customer"}
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["status"] == "pending"
    refund_id = refund.json()["id"]

    approved = api.post(f"/v1/refunds/{refund_id}/approve", headers=auth)
    assert approved.json()["status"] == "processing"

    final = wait_for(
        lambda: (r := api.get(f"/v1/refunds/{refund_id}", headers=auth).json())["status"] == "succeeded" and r
    )
    assert [t["status"] for t in final["timeline"]] == ["pending", "processing", "succeeded"]
    paid = api.get(f"/v1/payments/{payment.json()['id']}", headers=auth).json()
    assert (paid["status"], paid["refunded_amount"]) == ("refunded", 4999)

    provider = httpx.get(f"{stack.sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": provider_payment_id})
    assert provider.json()["count"] == 1
    assert provider.json()["data"][0]["metadata"] == {"refund_id": refund_id}

    def confirmations() -> list[email.message.EmailMessage]:  # the request's acknowledgement arrives too
        mails = [
            email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in stack.mail_dir.glob("*.eml")
        ]
        return [m for m in mails if isinstance(m, email.message.EmailMessage) and "on its way" in str(m["Subject"])]

    [message] = wait_for(confirmations)
    assert message["To"] == "ada@example.com"
    assert "€49.99" in message["Subject"]
    assert message["Message-ID"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and refund_id in body.get_content()

    [refunded] = asyncio.run(read_topic(stack.kafka, topic_for("payment.refunded", stack.prefix), expected=1))
    totals = json.loads(refunded.value or b"")
    assert (totals["refund_id"], totals["refunded_amount"], totals["remaining_amount"]) == (refund_id, 4999, 0)
