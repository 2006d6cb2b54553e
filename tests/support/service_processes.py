"""Refundflow's services as separate OS processes, as they run in production."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS


class ServiceProcess:
    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path, health_url: str) -> None:
        self.name = name
        self.health_url = health_url
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def service_env(**values: str) -> dict[str, str]:
    """The test's environment for a child, minus anything that would point it elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDFLOW_CRASH_AT",))}
    # Every test stack talks to the local sandbox over http, which the processor refuses unless told.
    return {
        **env,
        "LOG_LEVEL": "INFO",
        "STRIPE_SANDBOX": "true",
        "CONSUMER_SESSION_TIMEOUT_MS": str(CONSUMER_SESSION_TIMEOUT_MS),
        **values,
    }


def register_payment(
    intake_url: str, admin: dict[str, str], merchant_id: str, *, customer_email: str, provider_payment_id: str
) -> dict[str, Any]:
    """A captured one-time payment of the merchant's, registered by the platform on an intake process."""
    response = httpx.post(
        f"{intake_url}/v1/payments",
        headers=admin,
        json={
            "merchant_id": merchant_id,
            "customer_email": customer_email,
            "amount": 10_000,
            "currency": "EUR",
            "provider_payment_id": provider_payment_id,
            "paid_at": "2026-11-20T10:00:00Z",
            "product": {"id": "prod_1", "name": "Plan", "kind": "one_time"},
        },
    )
    payment: dict[str, Any] = response.json()
    return payment
