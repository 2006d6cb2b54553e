"""Turning a phase's raw observations into figures: rates, percentiles, CPU per lifecycle, and the count checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.lifecycles import Calls, Lifecycle, Receiver

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}


def percentiles(values_s: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles and the maximum, in milliseconds."""
    ordered = sorted(values_s)
    if not ordered:
        return {**dict.fromkeys(PERCENTILES), "max": None}
    picked = {name: ordered[min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1)] for name, p in PERCENTILES.items()}
    return {name: round(v * 1000, 1) for name, v in {**picked, "max": ordered[-1]}.items()}


def latencies(lives: Iterable[Lifecycle], succeeded_at: dict[str, float], receiver: Receiver) -> dict[str, Any]:
    to_succeeded, to_webhook = [], []
    for life in lives:
        if life.refund_id in succeeded_at:
            to_succeeded.append(succeeded_at[life.refund_id] - life.approve_sent)
        if arrivals := receiver.arrivals.get(life.refund_id):
            to_webhook.append(min(t for t, _ in arrivals) - life.approve_sent)
    return {"approve_to_succeeded": percentiles(to_succeeded), "approve_to_webhook": percentiles(to_webhook)}


def completed_at(lives: Iterable[Lifecycle], receiver: Receiver, emailed_at: dict[str, float]) -> list[float]:
    """When each lifecycle was complete: its webhook arrived and its customer email was at the sink."""
    done = []
    for life in lives:
        webhook = min((t for t, _ in receiver.arrivals.get(life.refund_id, [])), default=None)
        email = emailed_at.get(life.refund_id)
        if webhook is not None and email is not None:
            done.append(max(webhook, email))
    return sorted(done)


def per_second(times: Sequence[float], origin: float) -> list[int]:
    """How many of ``times`` fell in each second after ``origin``."""
    counts = Counter(int(t - origin) for t in times if t >= origin)
    return [counts.get(second, 0) for second in range(max(counts, default=-1) + 1)]


def http_figures(calls: Calls) -> dict[str, Any]:
    span = max(calls.last - calls.first, 1e-9)
    return {
        endpoint: {"count": len(seconds), "per_s": round(len(seconds) / span, 1), **percentiles(seconds)}
        for endpoint, seconds in calls.seconds.items()
    }


def cpu_per_lifecycle(cpu_seconds: dict[str, float], lifecycles: int) -> dict[str, float]:
    per = {name: round(seconds * 1000 / max(lifecycles, 1), 2) for name, seconds in cpu_seconds.items()}
    return {**per, "total": round(sum(per.values()), 2)}


def count_checks(
    refund_ids: list[str],
    provider: Counter[str],
    emails_by_refund: dict[str, list[tuple[float, str]]],
    receiver: Receiver,
    intake_succeeded: set[str],
    dead_letters: int,
) -> dict[str, Any]:
    """Every refund: one provider refund, one email of each kind (in the refund's order: ``emails_by_refund`` holds
    when the sink wrote each, and its kind), one webhook, succeeded in intake; no DLQ record."""
    problems: dict[str, list[str]] = {}

    def note(kind: str, refund_id: str) -> None:
        problems.setdefault(kind, []).append(refund_id)

    expected = ["refund_approved", "refund_succeeded"]  # the merchant asked: no "received" email
    for refund_id in refund_ids:
        if provider.get(refund_id, 0) != 1:
            note(f"provider_refunds_{provider.get(refund_id, 0)}", refund_id)
        emailed = [kind for _, kind in sorted(emails_by_refund.get(refund_id, []))]
        for kind in expected:
            if (n := emailed.count(kind)) != 1:
                note(f"{kind}_emails_{n}", refund_id)
        if emailed != expected and sorted(emailed) == sorted(expected):  # each once, in another order
            note("emails_out_of_order", refund_id)
        if (n := len(receiver.arrivals.get(refund_id, []))) != 1:
            note(f"webhooks_{n}", refund_id)
        if refund_id not in intake_succeeded:
            note("not_succeeded_in_intake", refund_id)
    return {
        "refunds": len(refund_ids),
        "dead_letters": dead_letters,
        "problems": {kind: {"count": len(ids), "examples": ids[:3]} for kind, ids in problems.items()},
        "ok": not problems and dead_letters == 0,
    }
