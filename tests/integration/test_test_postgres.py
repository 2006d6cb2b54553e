"""The suite's own PostgreSQL outlives other pytest runs on the machine.

As root, the embedded server runs as another user, which reaches its data directory only while every folder above
it lets others through. Each pytest run that starts makes its temp root (``/tmp/pytest-of-root``) private again, so a
data directory under it became unreachable mid-suite: the checkpointer PANICked on ``global/pg_control`` and every
later test of that worker met a refused connection.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from tests.support.infrastructure import postgres_server


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
