"""The bench's report: a table on stdout, ``<time>.json`` and a ``<time>.png`` beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The open loop's rate the latency targets are set at (BENCH_OPEN_RATE may run it at another, with no target).
TARGET_OPEN_RATE = 50
# (figure, where in the result, target, "min" or "max": whether the target is a floor or a ceiling); {rate} is the
# open loop's rate.
TARGETS: list[tuple[str, tuple[str, ...], float, str]] = [
    ("lifecycles/s, closed loop", ("throughput", "lifecycles_per_s"), 150, "min"),
    ("CPU ms per lifecycle, all processes", ("throughput", "cpu_ms_per_lifecycle", "total"), 12, "max"),
    ("p99 approve -> succeeded at {rate}/s ms", ("open_loop", "latency_ms", "approve_to_succeeded", "p99"), 500, "max"),
    ("p99 approve -> webhook at {rate}/s ms", ("open_loop", "latency_ms", "approve_to_webhook", "p99"), 1000, "max"),
    ("refunds/s, one processor, provider +200 ms", ("slow", "processor_refunds_per_s"), 100, "min"),
    ("webhooks/s, one endpoint answering in 200 ms", ("slow", "endpoint_webhooks_per_s"), 50, "min"),
]
RSS_LIMIT_MB = 150
SERVICES = ("intake", "processor", "notifier")


def _get(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = result
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def table(result: dict[str, Any]) -> str:
    lines = [f"Refundflow bench ({result['mode']}), {result['started_at']}, load {result['machine']['load_average']}"]
    lines.append(f"{'figure':<46}{'measured':>10}{'target':>10}{'ratio':>8}")
    rate = result["sizes"]["open_rate"]
    for name, path, target, kind in TARGETS:
        value = _get(result, path)
        shown = "-" if value is None else f"{value:.1f}"
        if path[0] == "open_loop" and rate != TARGET_OPEN_RATE:  # the target says nothing of another rate
            bound, ratio = "-", "-"
        else:
            bound = (">=" if kind == "min" else "<=") + format(target, "g")
            ratio = f"{(value / target if kind == 'min' else target / value) if value else 0.0:.2f}"
        lines.append(f"{name.format(rate=rate):<46}{shown:>10}{bound:>10}{ratio:>8}")
    for service in SERVICES:
        rss = result["rss_mb"].get(service, 0.0)
        limit = f"<{RSS_LIMIT_MB}"
        lines.append(f"{'peak RSS MB, ' + service:<46}{rss:>10.1f}{limit:>10}{RSS_LIMIT_MB / rss:>8.2f}")
    counts = result["counts"]
    lines.append(f"{'counts (' + str(counts['refunds']) + ' refunds)':<46}{'ok' if counts['ok'] else 'FAILED':>10}")
    for kind, problem in counts["problems"].items():
        lines.append(f"  {kind}: {problem['count']} (e.g. {', '.join(problem['examples'])})")
    lines.append(f"  dead letters: {counts['dead_letters']}")

    for phase in ("throughput", "open_loop"):
        figures = result[phase]
        lines.append(f"\n{phase}: {figures['lifecycles']} lifecycles in {figures['seconds']} s")
        cpu = figures["cpu_ms_per_lifecycle"]
        lines.append("  CPU ms per lifecycle: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
        for name, latency in figures["latency_ms"].items():
            lines.append(f"  {name} ms: " + ", ".join(f"{k} {v}" for k, v in latency.items()))
        for endpoint, http in figures["http"].items():
            at = f"{http['count']} at {http['per_s']}/s"
            lines.append(f"  {endpoint}: {at}, p50 {http['p50']} ms, p99 {http['p99']} ms")
    lines.append("\nscale, in the same run:")
    capacity, burst = result["capacity"], result["throughput"]
    tps = capacity["pgbench_tps"]
    tx_share = f" ({burst['postgres_tx_per_s'] / tps:.2f} of it)" if tps else ""
    lines.append(
        f"  PostgreSQL: pgbench -N -c8 {tps} tps; the stack ran {burst['postgres_tx_per_s']} tx/s{tx_share},"
        f" {burst['postgres_tx_per_lifecycle']} per lifecycle"
    )
    produced = capacity["broker_produce_per_s"]
    lines.append(
        f"  broker: raw {produced} produced/s, {capacity['broker_consume_per_s']} consumed/s; the stack published"
        f" {burst['broker_records_per_s']} records/s ({burst['broker_records_per_s'] / produced:.3f} of it),"
        f" {burst['broker_records_per_lifecycle']} per lifecycle"
    )
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (flow, latency) = plt.subplots(1, 2, figsize=(13, 4.5))
    for phase in ("throughput", "open_loop"):
        series = result[phase]["completed_per_second"]
        flow.plot(range(len(series)), series, label=f"{phase} ({result[phase]['lifecycles_per_s']}/s)")
    flow.axhline(150, color="grey", linestyle=":", label="target 150/s")
    flow.set(title="complete lifecycles per second", xlabel="seconds into the phase", ylabel="lifecycles")
    flow.legend()
    names = ["p50", "p90", "p99", "max"]
    bars = [
        (f"{phase}: {what.replace('approve_to_', 'approve→')}", result[phase]["latency_ms"][what])
        for phase in ("open_loop", "throughput")
        for what in ("approve_to_succeeded", "approve_to_webhook")
    ]
    width = 0.8 / len(bars)
    for index, (label, values) in enumerate(bars):
        latency.bar([i + index * width for i in range(len(names))], [values[n] or 0 for n in names], width, label=label)
    latency.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    latency.set(title="latency (ms, log scale)", yscale="log")
    latency.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path) -> Path:
    stamp = result["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    json_path = out / f"{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2))
    chart(result, json_path.with_suffix(".png"))
    print(table(result))
    print(f"\nwritten: {json_path} and {json_path.with_suffix('.png').name}")
    return json_path
