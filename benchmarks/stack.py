"""The whole stack for a bench run, as `make dev` runs it: PostgreSQL and Tansu (embedded, unless DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS are set), the SMTP sink, the provider sandbox and the three services, each an OS process
with its log in the run's folder. Ports are free ones, so a bench can run beside `make dev` or a test run."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import httpx

from benchmarks.process_stats import Watched
from refundflow_devstack.local_kafka import LocalKafka
from refundflow_devstack.local_postgres import LocalPostgres
from refundflow_devstack.service_migrations import migrate_all
from refundflow_shared.kafka_topics import ensure_service_topics
from refundflow_shared.secret_box import generate_key
from refundflow_shared.settings import ServiceSettings
from tests.support.infrastructure import free_port

SERVICES = ("intake", "processor", "notifier")
START_ATTEMPTS = 3


class PortTaken(RuntimeError):
    """A process could not bind the port picked for it: something else took it after it was picked."""


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.watched = Watched()
        self.admin_token = secrets.token_urlsafe(24)
        self.ports = {name: free_port() for name in (*SERVICES, "sandbox", "smtp")}
        self.mail_dir = workdir / "mail"
        self.database_url = ""
        self.bootstrap = ""
        self.prefix = ""
        self._secret_key = generate_key()
        self._internal_token = secrets.token_urlsafe(24)
        self.external: list[str] = []  # what came from the environment (its CPU is not measured)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._infra = ExitStack()

    def start(self) -> None:
        env = os.environ
        if url := env.get("DATABASE_URL"):
            self.database_url = asyncio.run(_fresh_database(url))
            self.external.append("postgres")
        else:
            profile = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track_planning": "on"}
            settings = profile if env.get("BENCH_SQL_PROFILE") == "1" else None
            postgres = LocalPostgres(self.workdir / "postgres", port=free_port(), settings=settings)
            self.database_url = postgres.start()
            self._infra.callback(postgres.stop)
            assert postgres._process is not None
            self.watched.add("postgres", postgres._process.pid)
        if servers := env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.bootstrap = servers
            self.external.append("broker")
        else:
            kafka = LocalKafka(port=free_port(), log_file=self.workdir / "tansu.log")
            self.bootstrap = kafka.start()
            self._infra.callback(kafka.stop)
            assert kafka._process is not None
            self.watched.add("broker", kafka._process.pid)
        # Topics of the run's own: a shared broker (tests, or one from the environment) keeps others' records.
        self.prefix = f"bench{uuid.uuid4().hex[:8]}."
        asyncio.run(self._prepare())
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_processes()
                return
            except PortTaken:  # between free_port() and the bind: every process again, on fresh ports
                for name in list(self._processes):
                    self.stop_process(name)
                if attempt == START_ATTEMPTS:
                    raise
                self.ports = {name: free_port() for name in self.ports}

    def _start_processes(self) -> None:
        self._spawn("smtp", [_script("refundflow-smtp-sink")], SMTP_SINK_DIR=str(self.mail_dir))
        self.start_sandbox()
        for name in SERVICES:
            self._spawn(name, [_script(f"refundflow-{name}")])
        for name in (*SERVICES, "sandbox"):
            self.wait_ready(name)
        self._check_alive("smtp")  # no health endpoint: up by now, or gone

    def common_env(self) -> dict[str, str]:
        """What `make dev` gives every process (refundflow_devstack.dev), on this run's ports."""
        sandbox = f"http://127.0.0.1:{self.ports['sandbox']}"
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TOPIC_PREFIX": self.prefix,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports["smtp"]),
            "SMTP_SINK_PORT": str(self.ports["smtp"]),
            "STRIPE_API_BASE": sandbox,
            "STRIPE_SANDBOX": "true",
            "STRIPE_API_KEY": "sk_test_refundflow_bench",
            "STRIPE_WEBHOOK_SECRET": "whsec_refundflow_bench",
            "SANDBOX_WEBHOOK_SECRET": "whsec_refundflow_bench",
            "SANDBOX_PORT": str(self.ports["sandbox"]),
            "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{self.ports['processor']}/v1/provider-webhooks/stripe",
            "REFUNDFLOW_ADMIN_TOKEN": self.admin_token,
            "WEBHOOK_SECRET_KEY": self._secret_key,
            "REFUNDFLOW_INTERNAL_TOKEN": self._internal_token,
            "REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS": "true",
        }

    def _spawn(self, name: str, command: list[str], **env: str) -> None:
        port = {"HTTP_PORT": str(self.ports[name])} if name in SERVICES else {}
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(
            command, env={**self.common_env(), **port, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        self._processes[name] = process
        self.watched.add(name, process.pid)

    def start_service(self, name: str) -> None:
        self._spawn(name, [_script(f"refundflow-{name}")])
        self.wait_ready(name)

    def start_sandbox(self, latency_ms: int = 0) -> None:
        self._spawn("sandbox", [_script("refundflow-sandbox")], SANDBOX_LATENCY_MS=str(latency_ms))

    def restart(self, name: str, **env: str) -> None:
        self.stop_process(name)
        if name == "sandbox":
            self.start_sandbox(int(env.get("SANDBOX_LATENCY_MS", "0")))
        else:
            self._spawn(name, [_script(f"refundflow-{name}")], **env)
        self.wait_ready(name)

    def stop_process(self, name: str) -> None:
        process = self._processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/" + ("healthz" if name == "sandbox" else "readyz")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} was not ready within {timeout} s; see {self.workdir / (name + '.log')}")

    def _check_alive(self, name: str) -> None:
        """Raises if the process ended, with the end of its log (the run's folder is gone after a failed run)."""
        if self._processes[name].poll() is None:
            return
        tail = "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
        error = PortTaken if "address already in use" in tail.lower() else RuntimeError
        raise error(f"{name} exited; the end of its log:\n{tail}")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        for name in list(self._processes):
            self.stop_process(name)
        self._infra.close()

    async def _prepare(self) -> None:
        await migrate_all(self.database_url)
        await ensure_service_topics(ServiceSettings(kafka_bootstrap_servers=self.bootstrap, topic_prefix=self.prefix))


def _script(name: str) -> str:
    """The workspace's own entry point, beside this Python: never another install found on PATH."""
    return str(Path(sys.executable).parent / name)


async def _fresh_database(server_url: str) -> str:
    """A new database on the server DATABASE_URL names: a run's counts must not meet an earlier run's rows."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
