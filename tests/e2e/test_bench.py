"""`make bench` in its short mode (BENCH_QUICK=1), made smaller still (BENCH_SIZES): it runs the whole stack,
reports every figure, and its count checks hold. No timing is asserted: the figures are for people and the README,
not for the suite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.stack import Stack
from tests.support.infrastructure import CONSUMER_SESSION_TIMEOUT_MS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
PERCENTILES = {"p50", "p90", "p99", "max"}


def test_the_quick_bench_drives_every_lifecycle_to_the_end_and_reports_each_figure(
    postgres_url: str, kafka_bootstrap: str, repo_root: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BENCH_QUICK": "1",
        # The shape of the run and of its report, not its figures: a few dozen refunds, a second of pgbench.
        # The slow phase's 80 exceed the processor's 64 calls in flight: two rounds, so its rate has a span (the
        # outcomes of one round may share one commit's time).
        "BENCH_SIZES": "merchants=2,warmup=5,throughput=20,open_count=10,slow=80,pgbench_seconds=1,broker_records=200",
        "CONSUMER_SESSION_TIMEOUT_MS": str(CONSUMER_SESSION_TIMEOUT_MS),  # each service joins its group sooner
        "BENCH_OUT": str(tmp_path),
        "DATABASE_URL": postgres_url,  # a database of its own on the test server
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,  # topics of its own on the test broker
    }
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run"], cwd=repo_root, env=env, capture_output=True, text=True, timeout=840
    )

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    [report] = tmp_path.glob("*.json")
    assert report.with_suffix(".png").stat().st_size > 10_000, "the chart is drawn beside the JSON"
    result = json.loads(report.read_text())
    sizes = result["sizes"]
    expected = sizes["warmup"] + sizes["throughput"] + sizes["open_count"] + sizes["slow"]
    assert result["counts"] == {"refunds": expected, "dead_letters": 0, "problems": {}, "ok": True}, (
        "one provider refund, one email of each kind and one webhook per refund, all succeeded, no dead letter"
    )
    assert result["external"] == ["postgres", "broker"], "taken from the environment, as make dev would"
    for phase, count in (("throughput", sizes["throughput"]), ("open_loop", sizes["open_count"])):
        figures = result[phase]
        assert figures["lifecycles"] == count
        assert figures["lifecycles_per_s"] > 0 and sum(figures["completed_per_second"]) == count
        for latency in figures["latency_ms"].values():
            assert set(latency) == PERCENTILES and all(v is not None and v > 0 for v in latency.values())
        cpu = figures["cpu_ms_per_lifecycle"]
        assert {"intake", "processor", "notifier", "sandbox", "smtp", "total"} <= set(cpu)
        assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"), abs=0.1)
        assert set(figures["http"]) == {"POST /v1/payments", "POST /v1/refunds", "POST /v1/refunds/{id}/approve"}
        assert all(http["count"] == count for http in figures["http"].values())
    assert result["slow"]["refunds"] == sizes["slow"]
    assert result["slow"]["processor_refunds_per_s"] > 0 and result["slow"]["endpoint_webhooks_per_s"] > 0
    assert {"intake", "processor", "notifier"} <= set(result["rss_mb"])
    assert result["capacity"]["pgbench_tps"] > 0 and result["capacity"]["broker_produce_per_s"] > 0
    assert "lifecycles/s, closed loop" in run.stdout, "the table is printed"


def test_the_bench_stack_starts_on_other_ports_when_a_port_it_picked_is_taken_meanwhile(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ports are free when picked, but another process (a parallel test's connection, say) may take one before
    the service binds it: the bench starts its processes again on fresh ports rather than fail the run."""
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("CONSUMER_SESSION_TIMEOUT_MS", str(CONSUMER_SESSION_TIMEOUT_MS))
    stack = Stack(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack.ports["processor"] = taken.getsockname()[1]
        try:
            stack.start()
            assert stack.ports["processor"] != taken.getsockname()[1]
            for name in ("intake", "processor", "notifier"):
                assert httpx.get(f"{stack.url(name)}/readyz", timeout=5).status_code == 200, name
        finally:
            stack.stop()
