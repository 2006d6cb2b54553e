"""Runs `refundflow` commands in a process of their own (one, started once per test module), as an operator's
shell would: the services running in the test process log to stdout, which must not mix with the command's."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from typer.testing import CliRunner


def _invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    from refundflow_cli.main import app

    result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


class CliWorker:
    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    async def invoke(self, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _invoke, args, env)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
