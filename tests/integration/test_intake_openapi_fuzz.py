"""Schemathesis against intake's own OpenAPI, every check, as a merchant would run it: a drift fails here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from refundflow_shared.secret_box import generate_key
from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, register_payment, service_env

ADMIN_TOKEN = "fuzz-admin-token"
CONFIG = Path(__file__).with_name("schemathesis.toml")  # who authenticates how, and the few narrow exclusions
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "20")  # per operation; raise it to dig deeper


@dataclass
class FuzzTarget:
    url: str
    merchant_key: str
    keys_merchant_key: str  # a second merchant's, for the API-key operations (they revoke keys)
    portal_token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[FuzzTarget]:
    port = free_port()
    env = service_env(
        DATABASE_URL=asyncio.run(create_database(postgres_url)),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        REFUNDFLOW_ADMIN_TOKEN=ADMIN_TOKEN,
        WEBHOOK_SECRET_KEY=generate_key(),  # webhook endpoints and Slack URLs are stored sealed
        HTTP_PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    url = f"http://127.0.0.1:{port}"
    intake = ServiceProcess("intake", ["refundflow-intake"], env, tmp_path_factory.mktemp("fuzz"), f"{url}/readyz")
    try:
        intake.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        merchant = httpx.post(f"{url}/v1/merchants", json={"name": "Fuzz"}, headers=admin).json()
        keys_merchant = httpx.post(f"{url}/v1/merchants", json={"name": "Fuzz keys"}, headers=admin).json()
        key = merchant["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        payment = register_payment(
            url, admin, merchant["id"], customer_email="fuzz@example.com", provider_payment_id="pi_fuzz"
        )
        token = httpx.post(f"{url}/v1/payments/{payment['id']}/portal-token", headers=auth).json()["token"]
        yield FuzzTarget(url=url, merchant_key=key, keys_merchant_key=keys_merchant["api_key"], portal_token=token)
        assert "Traceback" not in intake.log_path.read_text(errors="replace"), intake.log_tail()
    finally:
        intake.stop()


@pytest.mark.slow
def test_intake_answers_every_generated_request_as_its_openapi_document_says(
    target: FuzzTarget, tmp_path: Path
) -> None:
    # Schemathesis' own runner (examples, coverage, fuzzing and stateful phases), not its pytest plugin: the
    # plugin does not run on pytest 9 yet, and the CLI is what a merchant runs.
    st = Path(sys.executable).with_name("st")
    env = {
        **os.environ,
        "FUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
        "FUZZ_MERCHANT_KEY": target.merchant_key,
        "FUZZ_KEYS_MERCHANT_KEY": target.keys_merchant_key,
        "FUZZ_PORTAL_TOKEN": target.portal_token,
    }
    run = subprocess.run(
        [
            str(st),
            "--no-color",
            "--config-file",
            str(CONFIG),
            "run",
            f"{target.url}/openapi.json",
            "--max-examples",
            EXAMPLES,
            "--workers",
            "1",
            "--generation-database",
            "none",
        ],
        env=env,
        cwd=tmp_path,  # st keeps a cache of crashes in its working directory
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
