"""What an operator needs to set up Stripe's webhooks: the route's answers are in the processor's OpenAPI, and a
processor calling Stripe itself without a webhook secret says so when it starts (every webhook is then answered
503 and pending refunds wait for the sync job)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from refundflow_processor.app import create_app
from refundflow_processor.settings import ProcessorSettings
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.processor_harness import STRIPE_KEY
from tests.support.service_processes import ServiceProcess, service_env


def test_the_stripe_webhook_routes_refusals_are_in_the_openapi() -> None:
    openapi = create_app(ProcessorSettings.model_validate({"stripe_api_key": STRIPE_KEY})).openapi()
    responses = openapi["paths"]["/v1/provider-webhooks/stripe"]["post"]["responses"]
    expected = {
        "400": ("invalid_webhook_signature", "malformed_webhook"),
        "409": ("refund_in_flight",),
        "503": ("webhooks_not_configured", "database_busy"),
    }
    for status, codes in expected.items():
        assert status in responses, status
        assert all(f"`{code}`" in responses[status]["description"] for code in codes), responses[status]
        assert responses[status]["content"]["application/json"]["example"]["error"]["code"] == codes[0]


def test_a_processor_calling_stripe_without_a_webhook_secret_warns_at_start(
    tmp_path: Path, postgres_url: str, kafka_bootstrap: str
) -> None:
    """Its key goes to Stripe itself (no sandbox), which has nowhere to send its webhooks: the process says so.
    With nothing to do yet, it makes no call to Stripe."""
    port = free_port()
    env = service_env(
        DATABASE_URL=asyncio.run(create_database(postgres_url)),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        HTTP_PORT=str(port),
        STRIPE_API_KEY="sk_test_never_used",
        STRIPE_SANDBOX="false",
    )
    for unset in ("STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET"):
        env.pop(unset, None)
    processor = ServiceProcess("processor", ["refundflow-processor"], env, tmp_path, f"http://127.0.0.1:{port}/readyz")
    try:
        processor.wait_ready()
    finally:
        processor.stop()

    warnings = [
        json.loads(line)
        for line in processor.log_path.read_text(errors="replace").splitlines()
        if '"stripe_webhooks_not_configured"' in line
    ]
    assert len(warnings) == 1, processor.log_tail()
    assert warnings[0]["level"] == "warning"
    assert "STRIPE_WEBHOOK_SECRET" in warnings[0]["hint"]
