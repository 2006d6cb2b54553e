"""Links that are credentials (a customer's portal link, a team invite, a password reset) never reach a log line:
the access log names the route, not the token, and a query by its parameters' names only (a search holds an address)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, register_payment, service_env

ADMIN_TOKEN = "logs-admin-token"


def test_portal_invite_and_reset_tokens_in_a_url_are_never_logged(
    tmp_path: Path, postgres_url: str, kafka_bootstrap: str
) -> None:
    port = free_port()
    env = service_env(
        DATABASE_URL=asyncio.run(create_database(postgres_url)),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        REFUNDFLOW_ADMIN_TOKEN=ADMIN_TOKEN,
        HTTP_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    intake = ServiceProcess("intake", ["refundflow-intake"], env, tmp_path, f"{url}/readyz")
    try:
        intake.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        merchant = httpx.post(f"{url}/v1/merchants", json={"name": "Logs"}, headers=admin).json()
        payment = register_payment(
            url, admin, merchant["id"], customer_email="ada@example.com", provider_payment_id=f"pi_{uuid.uuid4().hex}"
        )
        link = httpx.post(
            f"{url}/v1/payments/{payment['id']}/portal-token",
            headers={"Authorization": f"Bearer {merchant['api_key']}"},
        ).json()
        token, invite, reset = link["token"], "inv_" + uuid.uuid4().hex, "rst_" + uuid.uuid4().hex
        assert httpx.get(f"{url}/portal/{token}").status_code == 200
        assert httpx.get(f"{url}/portal/{token}/requests/ref_x/status").status_code == 404
        httpx.get(f"{url}/dashboard/invite/{invite}")
        httpx.get(f"{url}/dashboard/reset-password/{reset}?again=1")
        httpx.get(f"{url}/portal/static/portal.js")
        httpx.get(f"{url}/dashboard/payments?q=ada%40example.com&page=2")  # the payment search is a GET form
    finally:
        intake.stop()

    logged = intake.log_path.read_text(errors="replace")
    for secret in (token, token.split(".")[1], invite, reset):
        assert secret not in logged, "a credential in a URL reached the log"
    assert "ada%40example" not in logged and "ada@example" not in logged, "a searched address reached the log"
    assert "GET /portal/[redacted] HTTP/1.1" in logged, "the access log still shows which page was asked"
    assert "GET /dashboard/reset-password/[redacted]?again=[redacted]" in logged
    assert "GET /dashboard/payments?q=[redacted]&page=[redacted]" in logged, "the query's parameter names stay"
    assert "GET /portal/static/portal.js" in logged, "only credentials are hidden"
