"""Schemathesis against intake's own OpenAPI: generated requests (valid and not) never get a 5xx."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.conftest import create_database
from tests.support.infrastructure import free_port
from tests.support.service_processes import ServiceProcess, service_env

ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))  # per operation and mode; raise it to dig deeper


@dataclass
class FuzzTarget:
    url: str
    merchant_key: str
    portal_token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, kafka_bootstrap: str) -> Iterator[FuzzTarget]:
    port = free_port()
    env = service_env(
        DATABASE_URL=asyncio.run(create_database(postgres_url)),
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_PREFIX=f"t{uuid.uuid4().hex[:10]}.",
        REFUNDFLOW_ADMIN_TOKEN=ADMIN_TOKEN,
        HTTP_PORT=str(port),
        LOG_LEVEL="WARNING",
    )
    url = f"http://127.0.0.1:{port}"
    intake = ServiceProcess("intake", ["refundflow-intake"], env, tmp_path_factory.mktemp("fuzz"), f"{url}/readyz")
    try:
        intake.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        merchant = httpx.post(f"{url}/v1/merchants", json={"name": "Fuzz"}, headers=admin).json()
        key = merchant["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        payment = httpx.post(
            f"{url}/v1/payments",
            headers=admin,
            json={
                "merchant_id": merchant["id"],
                "customer_email": "fuzz@example.com",
                "amount": 10_000,
                "currency": "EUR",
                "provider_payment_id": "pi_fuzz",
                "paid_at": "2026-11-20T10:00:00Z",
                "product": {"id": "prod_1", "name": "Plan", "kind": "one_time"},
            },
        ).json()
        token = httpx.post(f"{url}/v1/payments/{payment['id']}/portal-token", headers=auth).json()["token"]
        yield FuzzTarget(url=url, merchant_key=key, portal_token=token)
        assert "Traceback" not in intake.log_path.read_text(errors="replace"), intake.log_tail()
    finally:
        intake.stop()


def _credentials(target: FuzzTarget, method: str, path: str) -> dict[str, str]:
    if path.startswith("/v1/merchants") or (method.upper() == "POST" and path == "/v1/payments"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # the platform's calls
    if path.startswith("/v1/portal/"):
        return {"Authorization": f"Bearer {target.portal_token}"}
    return {"Authorization": f"Bearer {target.merchant_key}"}


def test_no_generated_request_gets_a_server_error_or_breaks_the_contract(target: FuzzTarget) -> None:
    # Hypothesis strategies per operation, not schemathesis' pytest plugin (it does not run on pytest 9 yet).
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json")
    failures: dict[str, str] = {}
    loaded = list(schema.get_all_operations())
    operations = [result.ok() for result in loaded if isinstance(result, Ok)]
    assert len(operations) == len(loaded), "every operation's schema loads"
    mine = [op for op in operations if not op.path.startswith(("/v1/webhook", "/v1/notification"))]
    assert len(mine) >= 25

    for operation, mode in itertools.product(mine, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            headers = {**(case.headers or {}), **_credentials(target, case.method, case.path)}
            case.call_and_validate(
                base_url=target.url,
                headers=headers,
                checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
            )

        try:
            call()
        except Unsatisfiable:
            continue  # nothing to make invalid (no parameters, no body): negative mode has no cases
        except Exception as failure:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures[f"{mode.value} {operation.method.upper()} {operation.path}"] = str(failure)[:2000]
    assert failures == {}
