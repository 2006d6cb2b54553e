"""The suite's own PostgreSQL outlives other pytest runs on the machine.

As root, the embedded server runs as another user, which reaches its data directory only while every folder above
it lets others through. Each pytest run that starts makes its temp root (``/tmp/pytest-of-root``) private again, so a
data directory under it became unreachable mid-suite: the checkpointer PANICked on ``global/pg_control`` and every
later test of that worker met a refused connection.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path

import asyncpg
import pytest

from refundflow_devstack.local_postgres import LocalPostgres
from tests.support.infrastructure import free_port, postgres_server


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as this user, who keeps its own folders")
def test_a_server_keeps_running_when_the_folder_it_was_given_turns_private(tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    with postgres_server(given) as url:
        tmp_path.chmod(0o700)  # what a pytest run starting beside this one does to its temp root

        async def checkpoint_and_read() -> int:
            connection = await asyncpg.connect(url)
            try:
                await connection.execute("CHECKPOINT")  # the checkpointer opens global/pg_control by full path
                value: int = await connection.fetchval("SELECT 1")
                return value
            finally:
                await connection.close()

        assert asyncio.run(checkpoint_and_read()) == 1


def _start_and_checkpoint(run_as: str, start_at: float, results: Queue[str]) -> None:
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="refundflow-race-")) / "postgres", free_port(), run_as=run_as)
    while time.time() < start_at:  # every process at once, as the test workers start their servers
        time.sleep(0.001)
    try:
        server.start()
        results.put("ok" if server._psql("CHECKPOINT").returncode == 0 else "no checkpoint")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        results.put(repr(exc))
    finally:
        server.stop()
        shutil.rmtree(server.data_dir.parent)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as a user of its own")
def test_servers_started_at_once_on_a_new_machine_each_start() -> None:
    """On a machine without the server's user, each test worker created it at the same moment: useradd answered
    each with another uid, only the last of them stayed, and the others' initdb failed on a uid that was gone."""
    run_as = f"rf_race_{uuid.uuid4().hex[:8]}"
    results: Queue[str] = multiprocessing.get_context("spawn").Queue()
    start_at = time.time() + 3
    context = multiprocessing.get_context("spawn")
    starts = [context.Process(target=_start_and_checkpoint, args=(run_as, start_at, results)) for _ in range(3)]
    try:
        for start in starts:
            start.start()
        for start in starts:
            start.join(timeout=120)
        assert sorted(results.get(timeout=5) for _ in starts) == ["ok", "ok", "ok"]
    finally:
        subprocess.run(["userdel", run_as], check=False, capture_output=True)
