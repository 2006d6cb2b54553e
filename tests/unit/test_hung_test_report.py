"""A test that hangs in an await fails at its timeout with the awaiting coroutines named, from an xdist worker too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HANGING = """
import asyncio

import pytest
import pytest_asyncio


async def a_consumer_that_will_not_stop() -> None:
    await asyncio.Event().wait()


@pytest_asyncio.fixture
async def running_consumer():
    yield
    await a_consumer_that_will_not_stop()


@pytest.mark.asyncio
async def test_stops_at_teardown(running_consumer):
    pass
"""


# Only what the run needs, and no configuration of ours: the plugin stands alone.
BARE_PYTEST = [
    "-p",
    "asyncio",
    "-p",
    "xdist",
    "-p",
    "timeout",
    "-p",
    "tests.support.hung_tasks",
    "-p",
    "no:cacheprovider",
]
BARE_PYTEST += ["-c", os.devnull, "-o", "asyncio_default_fixture_loop_scope=function"]


def test_a_test_hung_in_its_teardown_fails_naming_the_coroutine_it_waits_on(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "test_hanging.py").write_text(HANGING)
    run = subprocess.run(
        # --basetemp: a run under pytest's own temp root would make that root private again, and so cut off the
        # embedded PostgreSQL servers (run as another user) that the suite's tests keep there.
        [
            sys.executable,
            "-m",
            "pytest",
            *BARE_PYTEST,
            "-n",
            "1",
            "--timeout",
            "2",
            "--rootdir",
            str(tmp_path),
            "--basetemp",
            str(tmp_path / "tmp"),
            ".",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo_root), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Timeout (>2.0s) in test_hanging.py::test_stops_at_teardown" in run.stdout, run.stdout
    hung = run.stdout.partition("Timeout (>2.0s)")[2]
    assert "in running_consumer\n" in hung, "the fixture's frame, under pytest-asyncio's finalizer"
    assert "in a_consumer_that_will_not_stop\n" in hung and "await asyncio.Event().wait()" in hung, "and what it awaits"
