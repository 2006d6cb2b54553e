"""One refund end to end: HTTP in, three services as separate processes, the sandbox, an email out; and what
each service's /metrics says about it."""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

import refundflow_notifier as notifier
from refundflow_devstack.smtp_sink import start_smtp_sink
from refundflow_shared.events import topic_for
from tests.support.infrastructure import free_port
from tests.support.kafka_reader import read_topic
from tests.support.metrics_scrape import alert_rule_metrics, dashboard_metrics, scrape
from tests.support.notifier_harness import TEST_SECRET_KEY
from tests.support.raw_records import RawRecord, produce
from tests.support.service_processes import ServiceProcess, service_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "e2e-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MERCHANT_IDS: dict[str, str] = {}  # API key -> merchant id


class Stack:
    def __init__(self, intake_url: str, sandbox_url: str, mail_dir: Path, kafka: str, prefix: str) -> None:
        self.intake_url, self.sandbox_url, self.mail_dir = intake_url, sandbox_url, mail_dir
        self.kafka, self.prefix = kafka, prefix
        self.service_urls: dict[str, str] = {}  # intake, processor, notifier


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
        # Webhooks: secrets sealed with a key, receivers on 127.0.0.1 (the metrics test delivers one).
        "WEBHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
    }
    processes = []
    try:
        for name, port in ports.items():
            health = f"http://127.0.0.1:{port}/" + ("healthz" if name == "sandbox" else "readyz")
            env = service_env(**common, HTTP_PORT=str(port))
            processes.append(ServiceProcess(name, [f"refundflow-{name}"], env, workdir, health))
        for process in processes:
            process.wait_ready()
        running = Stack(
            f"http://127.0.0.1:{ports['intake']}", common["STRIPE_API_BASE"], mail_dir, kafka_bootstrap, prefix
        )
        running.service_urls = {name: f"http://127.0.0.1:{ports[name]}" for name in ("intake", "processor", "notifier")}
        yield running
    finally:
        for process in processes:
            process.stop()
        smtp.stop()


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
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment.json()["id"], "reason": "requested_by_customer"},
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


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A merchant's webhook endpoint: answers 200 and remembers the event types it received."""

    received: ClassVar[list[str]] = []
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        self.received.append(str(body.get("type")))
        self.bodies.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[tuple[str, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", _Receiver.received
    finally:
        server.shutdown()


def test_metrics_count_one_refunds_journey_across_the_three_services(
    stack: Stack, webhook_receiver: tuple[str, list[str]]
) -> None:
    receiver_url, received = webhook_receiver
    before = {name: scrape(url) for name, url in stack.service_urls.items()}
    api = httpx.Client(base_url=stack.intake_url, timeout=10)
    merchant = api.post("/v1/merchants", json={"name": "Metrics Ltd"}, headers=ADMIN)
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    endpoint = api.post(
        "/v1/webhook-endpoints", headers=auth, json={"url": receiver_url, "events": ["refund.succeeded"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    # The notifier learns of the endpoint from an event: counted there once handled.
    configured = {"service": "notifier", "event_type": "webhook_endpoint.configured", "outcome": "handled"}
    wait_for(
        lambda: (
            scrape(stack.service_urls["notifier"]).value("refundflow_events_handled_total", **configured)
            > before["notifier"].value("refundflow_events_handled_total", **configured)
        )
    )
    payment = api.post(
        "/v1/payments",
        headers=ADMIN,
        json={
            "merchant_id": merchant.json()["id"],
            "customer_email": "grace@example.com",
            "amount": 2500,
            "currency": "EUR",
            "provider_payment_id": f"pi_metrics_{uuid.uuid4().hex[:12]}",
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Pro plan", "kind": "one_time"},
        },
    )
    assert payment.status_code == 201, payment.text
    refund = api.post(
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment.json()["id"], "reason": "requested_by_customer"},
    )
    assert refund.status_code == 201, refund.text
    refund_id = refund.json()["id"]
    assert api.post(f"/v1/refunds/{refund_id}/approve", headers=auth).status_code == 200
    wait_for(lambda: api.get(f"/v1/refunds/{refund_id}", headers=auth).json()["status"] == "succeeded")
    wait_for(lambda: "refund.succeeded" in received)
    wait_for(lambda: scrape(stack.service_urls["notifier"]).value("refundflow_emails_total", outcome="sent") > 0)
    assert api.get(f"/no/such/page/{refund_id}").status_code == 404
    after = {name: scrape(url) for name, url in stack.service_urls.items()}

    def moved(scraped_from: str, name: str, /, **labels: str) -> float:
        return after[scraped_from].value(name, **labels) - before[scraped_from].value(name, **labels)

    for service in ("intake", "processor", "notifier"):
        assert after[service].content_type == CONTENT_TYPE_LATEST, after[service].content_type
    # Each service handled the events of this refund that it consumes, once each.
    handled = "refundflow_events_handled_total"
    assert moved("processor", handled, service="processor", event_type="refund.approved", outcome="handled") == 1
    assert moved("intake", handled, service="intake", event_type="refund.succeeded", outcome="handled") == 1
    assert moved("notifier", handled, service="notifier", event_type="refund.succeeded", outcome="handled") == 1
    assert (
        moved("processor", "refundflow_handler_seconds_count", service="processor", event_type="refund.approved") >= 1
    )
    # One provider call made the refund; the processor alone calls the provider.
    assert moved("processor", "refundflow_provider_calls_total", operation="create_refund", outcome="ok") == 1
    assert moved("processor", "refundflow_provider_call_seconds_count", operation="create_refund") == 1
    assert after["intake"].value("refundflow_provider_calls_total") == 0
    # Intake counted the refund's three statuses, after they committed.
    for status in ("pending", "processing", "succeeded"):
        assert moved("intake", "refundflow_refunds_total", status=status) == 1, status
    assert moved("intake", "refundflow_refunds_total", status="failed") == 0
    # The notifier sent the emails and delivered the webhook.
    assert moved("notifier", "refundflow_emails_total", outcome="sent") >= 1
    assert after["notifier"].label_values("refundflow_emails_total", "kind") <= _EMAIL_KINDS
    assert moved("notifier", "refundflow_webhook_deliveries_total", outcome="delivered") == 1
    # HTTP by route template: the refund's id is in no label, an unknown path is "unmatched".
    http_total = "refundflow_http_requests_total"
    assert moved("intake", http_total, method="POST", route="/v1/refunds", status="201") == 1
    assert moved("intake", http_total, method="POST", route="/v1/refunds/{refund_id}/approve", status="200") == 1
    assert moved("intake", http_total, method="GET", route="/v1/refunds/{refund_id}", status="200") >= 1
    assert moved("intake", http_total, method="GET", route="unmatched", status="404") == 1
    assert moved("intake", "refundflow_http_request_seconds_count", method="POST", route="/v1/refunds") == 1
    assert not [key for key in after["intake"].samples if refund_id in str(key)], "no id in any label"
    # The outbox gauges are there, per service, and the outbox drained.
    for service in ("intake", "processor", "notifier"):
        scraped = after[service]
        assert ("refundflow_outbox_unsent", frozenset({("service", service)})) in scraped.samples
        assert ("refundflow_outbox_oldest_unsent_seconds", frozenset({("service", service)})) in scraped.samples
    assert "refundflow_refunds_processing_oldest_seconds" in after["intake"].families
    # The consumer's lag, per topic and partition it holds.
    assert after["notifier"].label_values("refundflow_consumer_lag", "topic") >= {
        topic_for("refund.succeeded", stack.prefix)
    }


def test_a_refunds_webhooks_are_ordered_by_sequence_within_a_source_and_by_status_across_sources(
    stack: Stack, webhook_receiver: tuple[str, list[str]]
) -> None:
    """What the README tells receivers: ``sequence`` counts one payment's events from one ``source``; across
    sources (intake decides, the processor executes) the refund's status order and ``time`` tell."""
    receiver_url, _ = webhook_receiver
    api = httpx.Client(base_url=stack.intake_url, timeout=10)
    merchant = api.post("/v1/merchants", json={"name": "Order Ltd"}, headers=ADMIN)
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    types = ["refund.requested", "refund.approved", "refund.succeeded", "payment.refunded"]
    configured = {"service": "notifier", "event_type": "webhook_endpoint.configured", "outcome": "handled"}

    def notifier_handled() -> float:
        return scrape(stack.service_urls["notifier"]).value("refundflow_events_handled_total", **configured)

    handled_before = notifier_handled()
    endpoint = api.post("/v1/webhook-endpoints", headers=auth, json={"url": receiver_url, "events": types})
    assert endpoint.status_code == 201, endpoint.text
    payment = api.post(
        "/v1/payments",
        headers=ADMIN,
        json={
            "merchant_id": merchant.json()["id"],
            "customer_email": "lin@example.com",
            "amount": 1800,
            "currency": "EUR",
            "provider_payment_id": f"pi_order_{uuid.uuid4().hex[:12]}",
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Pro plan", "kind": "one_time"},
        },
    ).json()
    wait_for(lambda: notifier_handled() > handled_before, what="the notifier knowing the endpoint")
    refund = api.post(
        "/v1/refunds",
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment["id"], "reason": "duplicate"},
    ).json()
    assert api.post(f"/v1/refunds/{refund['id']}/approve", headers=auth).status_code == 200

    def lifecycle() -> list[dict[str, Any]] | None:
        bodies = [b for b in _Receiver.bodies if b["data"]["payment_id"] == payment["id"]]
        return bodies if len(bodies) == len(types) else None

    bodies = wait_for(lifecycle, what="the refund's four webhooks")
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type) == set(types)
    for body in bodies:  # CloudEvents, structured: the envelope, and the event's data
        assert set(body) == {"id", "source", "type", "time", "subject", "specversion", "dataschema", "sequence", "data"}
    # A refund's events are about the refund (subject), each of one payment (data.payment_id): the key they count by.
    subjects = {t: by_type[t]["subject"] for t in types}
    assert subjects == {t: payment["id"] if t == "payment.refunded" else refund["id"] for t in types}
    sources = {t: by_type[t]["source"] for t in types}
    assert sources == {
        "refund.requested": "refundflow/intake",
        "refund.approved": "refundflow/intake",
        "refund.succeeded": "refundflow/processor",
        "payment.refunded": "refundflow/processor",
    }
    sequence = {t: by_type[t]["sequence"] for t in types}
    # Within a source, sequence is the order: intake registered the payment (1), then the request, the approval.
    assert sequence["refund.requested"] < sequence["refund.approved"]
    assert sequence["refund.succeeded"] < sequence["payment.refunded"]
    # Across sources it is not: the processor numbers from 1, below intake's numbers for what came before.
    assert sequence["refund.succeeded"] < sequence["refund.approved"]
    # Across sources, time follows the refund's status order.
    times = [
        datetime.fromisoformat(by_type[t]["time"]) for t in ("refund.requested", "refund.approved", "refund.succeeded")
    ]
    assert times == sorted(times)


# Email kinds are template names: bounded by the code.
_EMAIL_KINDS = {p.name.split(".")[0] for p in (Path(notifier.__file__).parent / "templates").rglob("*.j2")}


def test_a_poison_message_is_counted_as_dead_lettered_by_every_service_that_reads_its_topic(stack: Stack) -> None:
    topic = topic_for("refund.succeeded", stack.prefix)
    before = {name: scrape(stack.service_urls[name]) for name in ("intake", "notifier")}
    poison = RawRecord(topic, b"pay_poison", [("ce_type", b"refund.succeeded")], b"{not json")
    asyncio.run(produce(stack.kafka, [poison]))
    for name in ("intake", "notifier"):
        dlq = {"service": name, "topic": topic}

        def parked(name: str = name, dlq: dict[str, str] = dlq) -> bool:
            return scrape(stack.service_urls[name]).value("refundflow_dlq_messages_total", **dlq) > before[name].value(
                "refundflow_dlq_messages_total", **dlq
            )

        wait_for(parked)
        after = scrape(stack.service_urls[name])
        handled = {"service": name, "event_type": "refund.succeeded", "outcome": "dead_lettered"}
        assert (
            after.value("refundflow_events_handled_total", **handled)
            == before[name].value("refundflow_events_handled_total", **handled) + 1
        )
        reasons = after.label_values("refundflow_dlq_messages_total", "reason")
        assert reasons and all(reason.isidentifier() for reason in reasons), reasons


def test_every_metric_the_alert_rules_and_dashboard_use_is_exposed_by_the_running_services(stack: Stack) -> None:
    exposed = set().union(*(scrape(url).sample_names() for url in stack.service_urls.values()))
    used = alert_rule_metrics() | dashboard_metrics()
    assert used, "the rules and the dashboard read metrics"
    assert used <= exposed, sorted(used - exposed)
