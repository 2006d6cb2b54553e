"""The bench's table: the open loop's latency is held to its targets only at the rate they are set at, the
bench's count settings are checked before anything starts, and its counts find what went missing, twice or out of
order."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from benchmarks.figures import count_checks
from benchmarks.lifecycles import Receiver
from benchmarks.report import table
from benchmarks.run import count_setting

LATENCY = {"p50": 300.0, "p90": 400.0, "p99": 450.0, "max": 500.0}


def _phase(lifecycles: int) -> dict[str, Any]:
    return {
        "lifecycles": lifecycles,
        "seconds": 10.0,
        "lifecycles_per_s": 30.0,
        "cpu_ms_per_lifecycle": {"intake": 20.0, "total": 20.0},
        "latency_ms": {"approve_to_succeeded": LATENCY, "approve_to_webhook": {**LATENCY, "p99": 800.0}},
        "http": {},
        "postgres_tx_per_s": 300.0,
        "postgres_tx_per_lifecycle": 9.0,
        "broker_records_per_s": 150.0,
        "broker_records_per_lifecycle": 5.0,
    }


def _result(open_rate: int) -> dict[str, Any]:
    return {
        "mode": "quick",
        "started_at": "2026-11-28T05:00:00+00:00",
        "machine": {"load_average": (1.0, 1.0, 1.0)},
        "sizes": {"open_rate": open_rate},
        "throughput": _phase(200),
        "open_loop": _phase(100),
        "slow": {"processor_refunds_per_s": 150.0, "endpoint_webhooks_per_s": 70.0},
        "rss_mb": {"intake": 100.0, "processor": 100.0, "notifier": 100.0},
        "capacity": {"pgbench_tps": 2500.0, "broker_produce_per_s": 30000, "broker_consume_per_s": 90000},
        "counts": {"refunds": 500, "ok": True, "problems": {}, "dead_letters": 0},
    }


def _row(report: str, starts: str) -> list[str]:
    [row] = [line for line in report.splitlines() if line.startswith(starts)]
    return row[len(starts) :].split()


def test_at_the_target_rate_the_open_loop_latency_is_held_to_its_targets() -> None:
    report = table(_result(50))

    assert _row(report, "p99 approve -> succeeded at 50/s ms") == ["450.0", "<=500", "1.11"]
    assert _row(report, "p99 approve -> webhook at 50/s ms") == ["800.0", "<=1000", "1.25"]


def test_at_another_rate_the_open_loop_latency_is_shown_without_a_target() -> None:
    report = table(_result(10))

    assert _row(report, "p99 approve -> succeeded at 10/s ms") == ["450.0", "-", "-"]
    assert _row(report, "p99 approve -> webhook at 10/s ms") == ["800.0", "-", "-"]
    assert "at 50/s" not in report
    assert _row(report, "lifecycles/s, closed loop") == ["30.0", ">=150", "0.20"], "other targets still apply"


@pytest.mark.parametrize("given", ["0", "fast", "-5", "2.5", ""])
def test_a_bench_count_setting_that_is_not_a_whole_number_above_zero_stops_the_bench(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_OPEN_RATE", given)

    with pytest.raises(SystemExit) as stopped:
        count_setting("BENCH_OPEN_RATE", 50)

    assert stopped.value.code == f"BENCH_OPEN_RATE must be a whole number above zero, not {given!r}"


def test_a_bench_count_setting_is_read_from_the_environment_or_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_OPEN_RATE", "12")
    assert count_setting("BENCH_OPEN_RATE", 50) == 12
    monkeypatch.delenv("BENCH_OPEN_RATE")
    assert count_setting("BENCH_OPEN_RATE", 50) == 50


def test_the_bench_counts_each_refunds_emails_and_their_order() -> None:
    receiver = Receiver()
    for refund_id in ("ref_1", "ref_2", "ref_3"):
        receiver.handle("/", {"webhook-id": f"msg_{refund_id}"}, orjson.dumps({"data": {"refund_id": refund_id}}))
    emails = {
        "ref_1": [(1.0, "refund_approved"), (2.0, "refund_succeeded")],
        "ref_2": [(2.0, "refund_approved"), (1.0, "refund_succeeded")],  # "on its way" came first
        "ref_3": [(1.0, "refund_approved"), (2.0, "refund_approved"), (3.0, "refund_succeeded")],
    }
    provider = Counter(["ref_1", "ref_2", "ref_3"])

    counts = count_checks(["ref_1", "ref_2", "ref_3"], provider, emails, receiver, {"ref_1", "ref_2", "ref_3"}, 0)

    assert counts["problems"] == {
        "emails_out_of_order": {"count": 1, "examples": ["ref_2"]},
        "refund_approved_emails_2": {"count": 1, "examples": ["ref_3"]},
    }
    assert not counts["ok"]
