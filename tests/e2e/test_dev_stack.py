"""`make dev`'s launcher on a bare machine, driven by the README's own curl walk-through."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.infrastructure import postgres_folder
from tests.support.readme_walkthrough import walkthrough_script

pytestmark = pytest.mark.e2e
DEV_PORTS = {
    "postgres": 5432,
    "kafka": 9092,
    "smtp": 1025,
    "intake": 8000,
    "processor": 8001,
    "notifier": 8002,
    "sandbox": 12111,
}


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _eventually(read: Callable[[], str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := read():
                return found
        except FileNotFoundError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not there within {timeout}s")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def var(tmp_path: Path) -> Iterator[Path]:
    """The stack's var/. Its PostgreSQL keeps its data there: as root, not under pytest's temp root (see
    ``postgres_folder``)."""
    with postgres_folder(tmp_path) as folder:
        yield folder / "var"


def test_the_dev_stack_starts_serves_the_readme_walkthrough_and_stops_cleanly(
    repo_root: Path, tmp_path: Path, var: Path
) -> None:
    busy = [name for name, port in DEV_PORTS.items() if _in_use(port)]
    if busy:
        pytest.skip(f"the dev stack's fixed ports are taken here: {busy}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "REFUNDFLOW_ADMIN_TOKEN")
    }
    env["REFUNDFLOW_VAR_DIR"] = str(var)
    log = (tmp_path / "dev.log").open("wb")
    started = time.monotonic()
    dev = subprocess.Popen(
        ["refundflow-dev"], cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        urls = [f"http://127.0.0.1:{DEV_PORTS[s]}/readyz" for s in ("intake", "processor", "notifier")]
        deadline = time.monotonic() + 120
        while not all(_ready(u) for u in urls):
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the dev stack was not ready within 120 s"
            time.sleep(0.5)
        print(f"dev stack ready in {time.monotonic() - started:.1f}s")
        for secret in ("admin-token", "webhook-secret-key", "internal-token"):
            assert (var / secret).stat().st_mode & 0o777 == 0o600, f"var/{secret} is kept, owner-only"

        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough_script(repo_root / "README.md")],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert '"status":"succeeded"' in result.stdout
        assert list((var / "mail").glob("*.eml")), "the confirmation email is in var/mail/"

        # The demo merchant of the first start: its owner's invite link is printed and opens the dashboard.
        demo = json.loads(_eventually(lambda: (var / "demo-merchant.json").read_text()))
        assert demo["invite_url"] in _eventually(
            lambda: (
                (tmp_path / "dev.log").read_text() if "/dashboard/invite/" in (tmp_path / "dev.log").read_text() else ""
            )
        )
        assert httpx.get(demo["invite_url"], timeout=5).status_code == 200
        # And a demo customer's link to the customer portal.
        portal = httpx.get(demo["portal_url"], timeout=5)
        assert portal.status_code == 200 and "Your purchase from Acme Software" in portal.text
        assert demo["portal_url"] in (tmp_path / "dev.log").read_text()
    finally:
        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        dev.wait(timeout=60)
        log.close()
    time.sleep(1)
    assert not [name for name, port in DEV_PORTS.items() if _in_use(port)], "Ctrl-C left something running"
