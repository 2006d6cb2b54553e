"""One approval is one trace across the three services, as separate processes: the merchant's ``traceparent`` is
continued by intake's request, the events, the processor's provider call, the notifier's email and webhook; the
webhook receiver gets the trace in its ``traceparent`` header; the spans reach an OTLP/HTTP collector; the trace id
is in every service's JSON log lines and in `refundflow refund`. A hostile ``traceparent`` starts a new trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from refundflow_devstack.smtp_sink import start_smtp_sink
from tests.cli.refundflow_stack import REFUNDFLOW, cli_env
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import TEST_SECRET_KEY
from tests.support.service_processes import ServiceProcess, service_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ADMIN = {"Authorization": "Bearer tracing-admin-token"}
SERVICES = ("intake", "processor", "notifier")
MERCHANT_TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Received:
    """What the test's HTTP servers were sent: OTLP spans (service name, trace id, span name), webhook headers."""

    spans: list[tuple[str, str, str]] = field(default_factory=list)
    webhooks: list[dict[str, str]] = field(default_factory=list)


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            received.spans.append((attributes["service.name"], span.trace_id.hex(), span.name))
                answer = ExportTraceServiceResponse().SerializeToString()
            else:
                received.webhooks.append({k.lower(): v for k, v in self.headers.items()})
                answer = b""
            self.send_response(200)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Stack:
    intake_url: str
    receiver_url: str
    logs: dict[str, Path]
    received: Received
    cli_env: dict[str, str]

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        lines = []
        for text in self.logs[service].read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[Stack]:
    from tests.conftest import create_database

    workdir = tmp_path_factory.mktemp("tracing")
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{server.server_address[1]}"
    smtp_port = free_port()
    smtp = start_smtp_sink(workdir / "mail", port=smtp_port)
    database_url = asyncio.run(create_database(postgres_url))
    prefix = f"t{uuid.uuid4().hex[:10]}."
    ports = {name: free_port() for name in ("sandbox", *SERVICES)}
    common = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "REFUNDFLOW_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "WEBHOOK_SECRET_KEY": TEST_SECRET_KEY,
        "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS": "true",  # the receiver listens on 127.0.0.1
        "STRIPE_API_BASE": f"http://127.0.0.1:{ports['sandbox']}",
        "STRIPE_API_KEY": "sk_test_tracing",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SANDBOX_PORT": str(ports["sandbox"]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # milliseconds: spans reach the collector soon after they end
    }
    processes = []
    try:
        for name, port in ports.items():
            health = f"http://127.0.0.1:{port}/" + ("healthz" if name == "sandbox" else "readyz")
            env = service_env(**common, HTTP_PORT=str(port))
            processes.append(ServiceProcess(name, [f"refundflow-{name}"], env, workdir, health))
        for process in processes:
            process.wait_ready()
        logs = {p.name: p.log_path for p in processes}
        yield Stack(
            f"http://127.0.0.1:{ports['intake']}",
            receiver,
            logs,
            received,
            cli_env(database_url, kafka_bootstrap, prefix),
        )
    finally:
        for process in processes:
            process.stop()
        smtp.stop()
        server.shutdown()


def trace_ids(lines: list[dict[str, Any]], event: str) -> set[str]:
    return {line["trace_id"] for line in lines if line.get("event") == event and "trace_id" in line}


def access_log_traces(lines: list[dict[str, Any]], request: str) -> set[str | None]:
    return {line.get("trace_id") for line in lines if request in str(line.get("event"))}


def test_one_approval_is_one_trace_in_every_services_logs_spans_webhook_and_the_cli(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.intake_url, timeout=10)
    merchant = api.post("/v1/merchants", json={"name": "Acme"}, headers=ADMIN)
    auth = {"Authorization": f"Bearer {merchant.json()['api_key']}"}
    endpoint = api.post(
        "/v1/webhook-endpoints",
        headers=auth,
        json={"url": f"{stack.receiver_url}/hook", "events": ["refund.succeeded"]},
    )
    assert endpoint.status_code == 201, endpoint.text

    # The notifier learns of the endpoint from intake's event, on another topic than the refund's: an event it handles
    # before that has no endpoint to go to.
    def endpoint_known() -> bool:
        handled = (
            line.get("event_type") for line in stack.log_lines("notifier") if line.get("event") == "event_handled"
        )
        return "webhook_endpoint.configured" in handled

    wait_for(endpoint_known, what="the notifier knowing the endpoint")
    payment = api.post(
        "/v1/payments",
        headers=ADMIN,
        json={
            "merchant_id": merchant.json()["id"],
            "customer_email": "ada@example.com",
            "amount": 4999,
            "currency": "EUR",
            "provider_payment_id": f"pi_trace_{uuid.uuid4().hex[:12]}",
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Pro plan", "kind": "one_time"},
        },
    )
    assert payment.status_code == 201, payment.text
    # A hostile traceparent on the request: answered as ever, in a new trace. (A control character in it would not
    # get this far: the HTTP parser refuses it, see test_backbone_http_limits.)
    hostile = {**auth, "traceparent": "00-" + "z" * 32 + "-" + "0" * 16 + "-01~" + "x" * 5000}
    refund = api.post(
        "/v1/refunds",
        headers={**hostile, "Idempotency-Key": uuid.uuid4().hex},
        json={"payment_id": payment.json()["id"], "reason": "requested_by_customer"},
    )
    assert refund.status_code == 201, refund.text
    refund_id = refund.json()["id"]
    request_trace = refund.headers["traceresponse"].split("-")[1]
    assert request_trace != "z" * 32 and len(request_trace) == 32

    merchants_span = "b7ad6b7169203331"
    approved = api.post(
        f"/v1/refunds/{refund_id}/approve", headers={**auth, "traceparent": f"00-{MERCHANT_TRACE}-{merchants_span}-01"}
    )
    assert approved.status_code == 200, approved.text
    assert approved.headers["traceresponse"].split("-")[1] == MERCHANT_TRACE

    webhook = wait_for(lambda: stack.received.webhooks)[0]
    assert webhook["traceparent"].split("-")[1] == MERCHANT_TRACE

    # The JSON logs: the approval's request (intake), the provider call (processor), the email and the webhook.
    intake, processor = stack.log_lines("intake"), stack.log_lines("processor")
    assert access_log_traces(intake, f"POST /v1/refunds/{refund_id}/approve ") == {MERCHANT_TRACE}
    assert access_log_traces(intake, "POST /v1/refunds ") == {request_trace}, "the hostile request has its own trace"
    assert trace_ids(processor, "refund_succeeded") == {MERCHANT_TRACE}
    assert MERCHANT_TRACE in wait_for(lambda: trace_ids(stack.log_lines("notifier"), "message_sent"))
    # Logged once the receiver has answered, which may be after it showed us the webhook.
    assert wait_for(lambda: trace_ids(stack.log_lines("notifier"), "webhook_attempted")) == {MERCHANT_TRACE}

    # The spans: every service exported spans of the approval's trace, among them the provider call and the sends.
    expected = {
        ("refundflow-intake", "POST /v1/refunds/{refund_id}/approve"),
        ("refundflow-processor", "stripe create_refund"),
        ("refundflow-notifier", "webhook delivery"),
    }

    def approval_spans() -> set[tuple[str, str]]:
        found = {(service, name) for service, trace, name in stack.received.spans if trace == MERCHANT_TRACE}
        emails = any(s == "refundflow-notifier" and name.startswith("email ") for s, name in found)
        return found if expected <= found and emails else set()

    wait_for(approval_spans)

    # The operator's view: both traces (the request's and the approval's), by the steps that ran in them.
    env = {**os.environ, **stack.cli_env}
    story = json.loads(
        subprocess.run([REFUNDFLOW, "refund", refund_id, "--json"], env=env, capture_output=True, check=True).stdout
    )
    assert story["trace_ids"] == [request_trace, MERCHANT_TRACE]
    [attempt] = story["processor"]["attempts"]
    assert attempt["trace_id"] == MERCHANT_TRACE
    readable = subprocess.run([REFUNDFLOW, "refund", refund_id], env=env, capture_output=True, check=True, text=True)
    assert f"Trace ids: {request_trace}, {MERCHANT_TRACE}" in readable.stdout
