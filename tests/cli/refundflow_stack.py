"""The whole of Refundflow in this process, on the real broker and PostgreSQL, for driving `refundflow` against:
intake (over ASGI), the processor with the provider sandbox, the notifier (which tests stop and start again) with
real SMTP and HTTP receivers. The command line itself runs in a process of its own (``CliWorker``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from refundflow_intake.app import create_app as create_intake
from refundflow_intake.settings import IntakeSettings
from refundflow_notifier.app import create_app as create_notifier
from refundflow_processor.app import create_app as create_processor
from refundflow_processor.settings import ProcessorSettings
from refundflow_sandbox.app import create_app as create_sandbox
from refundflow_sandbox.settings import SandboxSettings
from tests.cli.cli_worker import CliWorker
from tests.conftest import create_database
from tests.support.http_servers import serving
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import TEST_SECRET_KEY, notifier_settings
from tests.support.notifier_receivers import CapturingSmtpHandler, HttpReceiver, http_receiver, smtp_server
from tests.support.probe_service import eventually

ADMIN = {"Authorization": "Bearer cli-test-admin-token"}
REFUNDFLOW = str(Path(sys.executable).parent / "refundflow")  # the console script, as installed
WEBHOOK_SECRET = "whsec_cli_tests"


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def cli_env(database_url: str, kafka: str, prefix: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka, "TOPIC_PREFIX": prefix, "COLUMNS": "200"}


@dataclass
class RefundflowStack:
    database_url: str
    kafka: str
    prefix: str
    api: httpx.AsyncClient
    db: asyncpg.Pool  # no search path: tables are named with their schema
    smtp: CapturingSmtpHandler
    http: HttpReceiver
    sandbox_url: str
    notifier_settings: Any
    worker: CliWorker
    _notifier: AsyncExitStack | None = None
    merchants: dict[str, str] = field(default_factory=dict)  # API key -> merchant id
    processor_url: str = ""
    apps: dict[str, FastAPI] = field(default_factory=dict)  # the running services' (the notifier's: the latest)

    async def cli(self, *args: str) -> CliResult:
        """`refundflow ARGS`, pointed at this stack through the environment as the services are."""
        env = cli_env(self.database_url, self.kafka, self.prefix)
        return CliResult(*await self.worker.invoke(list(args), env))

    async def run_refundflow(self, *args: str) -> CliResult:
        """The installed console script in a process of its own (several may run at once)."""
        process = await asyncio.create_subprocess_exec(
            REFUNDFLOW, *args, env=self.env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode is not None
        return CliResult(process.returncode, stdout.decode(), stderr.decode())

    def env(self) -> dict[str, str]:
        return {**os.environ, **cli_env(self.database_url, self.kafka, self.prefix)}

    async def start_notifier(self) -> None:
        assert self._notifier is None
        running = AsyncExitStack()
        app = create_notifier(self.notifier_settings)
        await running.enter_async_context(app.router.lifespan_context(app))
        self._notifier, self.apps["notifier"] = running, app

    async def stop_notifier(self) -> None:
        assert self._notifier is not None
        await self._notifier.aclose()
        self._notifier = None

    async def merchant(self) -> tuple[str, dict[str, str]]:
        response = await self.api.post("/v1/merchants", json={"name": "Acme Software"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], {"Authorization": f"Bearer {body['api_key']}"}

    async def payment(self, merchant_id: str, provider_payment_id: str | None = None) -> dict[str, Any]:
        response = await self.api.post(
            "/v1/payments",
            headers=ADMIN,
            json={
                "merchant_id": merchant_id,
                "customer_email": "ada@example.com",
                "amount": 4999,
                "currency": "EUR",
                "provider_payment_id": provider_payment_id or f"pi_cli_{uuid.uuid4().hex[:12]}",
                "paid_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                "product": {"id": "prod_pro", "name": "Pro plan", "kind": "one_time"},
            },
        )
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def request_refund(self, auth: dict[str, str], payment_id: str) -> str:
        """The customer asks, through the link the merchant gave them (so they are told it was received)."""
        link = await self.api.post(f"/v1/payments/{payment_id}/portal-token", headers=auth)
        assert link.status_code == 201, link.text
        response = await self.api.post(
            "/v1/portal/refund-requests",
            headers={"Authorization": f"Bearer {link.json()['token']}"},
            json={"reason": "technical_issue", "message": "It crashes on start"},
        )
        assert response.status_code == 201, response.text
        refund_id: str = response.json()["id"]
        return refund_id

    async def approve(self, auth: dict[str, str], refund_id: str) -> None:
        response = await self.api.post(f"/v1/refunds/{refund_id}/approve", headers=auth)
        assert response.status_code == 200, response.text

    async def refund_status(self, refund_id: str) -> str | None:
        status: str | None = await self.db.fetchval("SELECT status FROM intake.refunds WHERE id = $1", refund_id)
        return status

    async def wait_for_status(self, refund_id: str, status: str, timeout: float = 60) -> None:
        async def reached() -> bool:
            return await self.refund_status(refund_id) == status

        await eventually(reached, timeout=timeout)

    async def provider_refunds(self, provider_payment_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"{self.sandbox_url}/v1/_sandbox/refunds", params={"payment_intent": provider_payment_id}
            )
        data: list[dict[str, Any]] = answer.json()["data"]
        return data


@asynccontextmanager
async def refundflow_stack(postgres_url: str, kafka: str) -> AsyncIterator[RefundflowStack]:
    database_url = await create_database(postgres_url)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    common: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka,
        "topic_prefix": prefix,
        "outbox_poll_interval_seconds": 0.2,
        "consumer_retry_base_seconds": 0.05,
        "consumer_retry_max_seconds": 0.5,
    }
    processor_port, sandbox_port = free_port(), free_port()
    sandbox = SandboxSettings.model_validate(
        {
            "port": sandbox_port,
            "webhook_url": f"http://127.0.0.1:{processor_port}/v1/provider-webhooks/stripe",
            "webhook_secret": WEBHOOK_SECRET,
            "default_currency": "eur",
        }
    )
    processor = ProcessorSettings.model_validate(
        common
        | {
            "http_port": processor_port,
            "stripe_api_base": f"http://127.0.0.1:{sandbox_port}",
            "stripe_api_key": "sk_test_cli",
            "stripe_sandbox": True,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "provider_retry_base_seconds": 0.05,
            "provider_retry_max_seconds": 0.5,
            "executor_poll_interval_seconds": 0.2,
            "sync_interval_seconds": 3600,
        }
    )
    intake = create_intake(
        IntakeSettings(
            **common,
            refundflow_admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
            webhook_secret_key=TEST_SECRET_KEY,
            refundflow_allow_private_webhook_urls=True,  # the receivers listen on 127.0.0.1
            awaited_event_wait_seconds=3.0,  # a command for a payment that never comes is refused in seconds
        )
    )
    async with AsyncExitStack() as running:
        smtp, smtp_port = running.enter_context(smtp_server())
        http = await running.enter_async_context(http_receiver())
        notifier = notifier_settings(
            database_url, kafka, smtp_port, topic_prefix=prefix, consumer_retry_max_seconds=0.5
        )
        sandbox_url = await running.enter_async_context(serving(create_sandbox(sandbox), sandbox_port))
        db = await asyncpg.create_pool(database_url)
        assert db is not None
        running.push_async_callback(db.close)
        api = await running.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=intake), base_url="http://intake")
        )
        worker = CliWorker()
        running.callback(worker.close)
        stack = RefundflowStack(database_url, kafka, prefix, api, db, smtp, http, sandbox_url, notifier, worker)
        stack.processor_url = f"http://127.0.0.1:{processor_port}"
        running.push_async_callback(_stop_notifier_if_running, stack)
        stack._notifier = AsyncExitStack()
        stack.apps = {"intake": intake, "processor": create_processor(processor), "notifier": create_notifier(notifier)}
        notifier_app = _lifespan(stack.apps["notifier"])
        # The three start together: each waits for its consumer group to form.
        apps = [_lifespan(intake), serving(stack.apps["processor"], processor_port), notifier_app]
        started = await asyncio.gather(*(app.__aenter__() for app in apps), return_exceptions=True)
        for app, outcome in zip(apps, started, strict=True):
            if not isinstance(outcome, BaseException):
                (stack._notifier if app is notifier_app else running).push_async_exit(app)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield stack


def _lifespan(app: FastAPI) -> AbstractAsyncContextManager[Any]:
    return app.router.lifespan_context(app)


async def _stop_notifier_if_running(stack: RefundflowStack) -> None:
    if stack._notifier is not None:
        await stack.stop_notifier()
