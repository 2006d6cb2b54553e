"""What goes wrong between a consumer and the broker is logged, never swallowed: FastStream acks a batch (commits
its offsets) and reads the next one in its own code, which logs nothing unless it is given a logger."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from tests.conftest import create_database
from tests.support.probe_service import eventually, probe_settings, refund_requested, stage_events, start_probe


async def test_an_offset_commit_that_fails_is_logged_and_the_event_is_still_handled_once(
    postgres_url: str, kafka_bootstrap: str, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = probe_settings(await create_database(postgres_url), kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
    runtime = await start_probe(settings)
    try:
        consumer = runtime.consumer.kafka_consumer
        assert consumer is not None
        commit = consumer.commit
        failures = ["the group rebalanced while the batch was handled"]

        async def commit_failing_once(*args: Any, **kwargs: Any) -> None:
            if failures:  # what a real rebalance does to a commit; the broker here cannot be made to rebalance
                raise CommitFailedError(failures.pop())
            await commit(*args, **kwargs)

        consumer.commit = commit_failing_once
        [event] = await stage_events(runtime.pool, [refund_requested("pay_commit_lost")])

        async def handled() -> bool:
            return bool(await runtime.pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", event.id))

        await eventually(handled, timeout=30)
        await eventually(lambda: _no_commit_failures_left(failures), timeout=30)
        assert await runtime.pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", event.id) == 1
    finally:
        await runtime.stop()

    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    logged = [line for line in lines if "CommitFailedError" in json.dumps(line)]
    assert logged, "the failed commit reached the log"
    assert all(line["level"] in ("error", "critical") for line in logged)
    assert all(line.get("service") == "probe" for line in logged)


async def _no_commit_failures_left(failures: list[str]) -> bool:
    return not failures
