"""`make dev`: the whole system on a bare machine, in the foreground; Ctrl-C stops all of it.

Starts what is not configured from outside (PostgreSQL unless DATABASE_URL, the Tansu broker unless
KAFKA_BOOTSTRAP_SERVERS, an SMTP sink unless SMTP_HOST), then runs the services with honcho.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from refundflow_devstack.demo_data import banner, demo_account
from refundflow_devstack.local_kafka import LocalKafka
from refundflow_devstack.local_postgres import LocalPostgres
from refundflow_devstack.service_migrations import migrate_all
from refundflow_shared.kafka_topics import ensure_service_topics
from refundflow_shared.secret_box import generate_key
from refundflow_shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
VAR = Path(os.environ.get("REFUNDFLOW_VAR_DIR", ROOT / "var"))
SANDBOX_URL = "http://127.0.0.1:12111"
INTAKE_URL = "http://127.0.0.1:8000"


def kept_secret(env_var: str, file_name: str, generate: Callable[[], str]) -> str:
    """A secret from the environment, else one generated once and kept under var/ (stable across restarts)."""
    if value := os.environ.get(env_var):
        return value
    path = VAR / file_name
    if not path.exists():
        path.write_text(generate())
        path.chmod(0o600)
    return path.read_text().strip()


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the stack as cleanly as Ctrl-C
    VAR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    stack: list[LocalPostgres | LocalKafka] = []
    processes = ["sandbox", "intake", "processor", "notifier"]
    try:
        if "DATABASE_URL" not in env:
            postgres = LocalPostgres(VAR / "postgres", port=int(env.get("REFUNDFLOW_PG_PORT", "5432")))
            stack.append(postgres)
            env["DATABASE_URL"] = postgres.start()
        if "KAFKA_BOOTSTRAP_SERVERS" not in env:
            kafka = LocalKafka(port=9092, log_file=VAR / "tansu.log")
            stack.append(kafka)
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.start()
        if "SMTP_HOST" not in env:
            env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "1025", "SMTP_SINK_DIR": str(VAR / "mail")}
            processes.insert(0, "smtp")
        if "STRIPE_API_BASE" not in env:  # the local sandbox, over http: say so explicitly
            env |= {"STRIPE_API_BASE": SANDBOX_URL, "STRIPE_SANDBOX": "true"}
        env.setdefault("STRIPE_API_KEY", "sk_test_refundflow_local")
        # The sandbox signs refund.updated webhooks to the processor as Stripe would.
        env.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_refundflow_local")
        env.setdefault("SANDBOX_WEBHOOK_SECRET", env["STRIPE_WEBHOOK_SECRET"])
        env.setdefault("SANDBOX_WEBHOOK_URL", "http://127.0.0.1:8001/v1/provider-webhooks/stripe")
        env["REFUNDFLOW_ADMIN_TOKEN"] = kept_secret("REFUNDFLOW_ADMIN_TOKEN", "admin-token", _token)
        # Intake and the notifier share it: it seals merchants' webhook signing secrets and Slack URLs.
        # (WEBHOOK_SECRET_KEYS, a key ring, takes precedence when set.)
        env["WEBHOOK_SECRET_KEY"] = kept_secret("WEBHOOK_SECRET_KEY", "webhook-secret-key", generate_key)
        # Intake shows it to the notifier's internal API (delivery logs, replays); a secret of its own.
        env["REFUNDFLOW_INTERNAL_TOKEN"] = kept_secret("REFUNDFLOW_INTERNAL_TOKEN", "internal-token", _token)
        # Locally, webhooks and Slack alerts may go to loopback and private addresses (never in production).
        env.setdefault("REFUNDFLOW_ALLOW_PRIVATE_WEBHOOK_URLS", "true")

        # The dashboard is served over plain http on 127.0.0.1 here: its cookies cannot be Secure-only.
        env.setdefault("DASHBOARD_COOKIE_SECURE", "false")
        env.setdefault("DASHBOARD_PUBLIC_URL", INTAKE_URL)

        asyncio.run(_prepare(env["DATABASE_URL"], env["KAFKA_BOOTSTRAP_SERVERS"], env.get("TOPIC_PREFIX", "")))
        _print_banner(env, "smtp" in processes)
        honcho = shutil.which("honcho") or "honcho"
        runner = subprocess.Popen([honcho, "-f", str(ROOT / "Procfile"), "start", *processes], env=env, cwd=ROOT)
        threading.Thread(target=_demo, args=(env["REFUNDFLOW_ADMIN_TOKEN"],), daemon=True).start()
        try:
            sys.exit(runner.wait())
        except KeyboardInterrupt:
            # The terminal's Ctrl-C reached honcho too; it stops the services, then we stop the stack.
            runner.send_signal(signal.SIGINT)
            runner.wait()
    finally:
        for part in reversed(stack):
            part.stop()


def _demo(admin_token: str) -> None:
    """Once intake answers: the demo merchant (created on the first start) and how to sign in."""
    try:
        account = demo_account(INTAKE_URL, admin_token, VAR)
    except httpx.HTTPError as exc:
        print(f"\nThe demo merchant could not be created: {exc}", flush=True)
        return
    if account is not None:
        print(banner(account, INTAKE_URL), flush=True)


def _token() -> str:
    return secrets.token_urlsafe(24)


async def _prepare(dsn: str, bootstrap: str, prefix: str) -> None:
    for line in await migrate_all(dsn):
        print(f"migrated {line}")
    await ensure_service_topics(ServiceSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix))


def _print_banner(env: dict[str, str], local_smtp: bool) -> None:
    mail = f"SMTP sink 127.0.0.1:1025 -> {VAR / 'mail'}/*.eml" if local_smtp else f"SMTP {env['SMTP_HOST']}"
    print(
        "\nRefundflow is starting:\n"
        "  intake API      http://127.0.0.1:8000      (API docs: http://127.0.0.1:8000/docs)\n"
        "  processor       http://127.0.0.1:8001/readyz\n"
        "  notifier        http://127.0.0.1:8002/readyz\n"
        f"  provider sandbox {SANDBOX_URL}\n"
        f"  PostgreSQL      {env['DATABASE_URL']}\n"
        f"  Kafka broker    {env['KAFKA_BOOTSTRAP_SERVERS']}\n"
        f"  mail            {mail}\n"
        f"  admin token     {env['REFUNDFLOW_ADMIN_TOKEN']}   (Authorization: Bearer <token> on POST /v1/merchants)\n",
        flush=True,
    )
