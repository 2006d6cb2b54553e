"""`make bench`: complete refund lifecycles through the whole stack on this machine, in one run.

Phases (each reported): a closed-loop burst for throughput and CPU per lifecycle; an open loop at 50 lifecycles/s
(BENCH_OPEN_RATE) for latency; a slow provider (every call answered 200 ms late) with a backlog of approvals for one
processor and a receiver answering 200 ms late for one endpoint; then pgbench and a raw broker client on the same
PostgreSQL and broker, for scale. Every refund is checked once everything is done: one provider refund, one email
of each kind (in the refund's order), one webhook, succeeded in intake, no dead letter.

BENCH_QUICK=1 runs a few hundred refunds; BENCH_SIZES ("throughput=20,slow=10") replaces any of SIZES (the test
suite proves the bench works with a few dozen refunds); BENCH_OUT sets where the JSON and PNG go (default var/bench/).
BENCH_CONCURRENCY sets the burst's clients (32) and BENCH_OPEN_RATE the open loop's lifecycles per second (50, the
rate the latency targets are set at): a machine that cannot carry 50/s measures its queue there, not the stack's
latency.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import capacity, figures, outcomes, sql_profile
from benchmarks.http_wire import HttpClient
from benchmarks.lifecycles import Calls, Driver, Lifecycle, Merchant, Receiver
from benchmarks.process_stats import Profiler, cpu_delta
from benchmarks.report import TARGET_OPEN_RATE, write_report
from benchmarks.stack import Stack
from tests.support.infrastructure import free_port


def count_setting(name: str, default: int) -> int:
    """A whole number above zero from the environment, or the bench stops saying which setting is wrong."""
    given = os.environ.get(name, str(default))
    if not given.isdigit() or int(given) < 1:
        sys.exit(f"{name} must be a whole number above zero, not {given!r}")
    return int(given)


QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = {
    "merchants": 4,
    "warmup": 100,  # pools full and statements prepared before anything is measured
    "throughput": 200 if QUICK else 3000,
    "concurrency": count_setting("BENCH_CONCURRENCY", 32),
    "open_rate": count_setting("BENCH_OPEN_RATE", TARGET_OPEN_RATE),
    "open_count": 100 if QUICK else 1000,
    "slow": 100 if QUICK else 1000,
    "slow_provider_ms": 200,
    "pgbench_seconds": 3 if QUICK else 10,
    "broker_records": 5_000 if QUICK else 50_000,
}


def size_overrides(given: str) -> dict[str, int]:
    """BENCH_SIZES, "name=count,...": sizes of SIZES to replace (the suite runs the bench small to prove its shape)."""
    overrides: dict[str, int] = {}
    for item in filter(None, given.split(",")):
        name, _, count = item.partition("=")
        if name not in SIZES or not count.isdigit() or int(count) < 1:
            sys.exit(f"BENCH_SIZES takes name=count of {sorted(SIZES)}, a count above zero, not {item!r}")
        overrides[name] = int(count)
    return overrides


SIZES |= size_overrides(os.environ.get("BENCH_SIZES", ""))
TIMEOUT = 300.0 if QUICK else 900.0
ROOT = Path(__file__).resolve().parents[1]


class Bench:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.receiver = Receiver()
        self.driver = Driver(HttpClient("127.0.0.1", stack.ports["intake"]), stack.admin_token)
        self.lives: list[Lifecycle] = []
        self.provider: Counter[str] = Counter()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")

    async def setup(self) -> tuple[list[Merchant], Merchant]:
        await self.receiver.start(free_port())
        hooks = f"http://127.0.0.1:{self.receiver.port}"
        merchants = [await self.driver.merchant(f"Bench {i}", f"{hooks}/fast/{i}") for i in range(SIZES["merchants"])]
        slow = await self.driver.merchant("Bench slow receiver", f"{hooks}/slow/0")
        # Endpoints reach the notifier as events keyed by merchant: wait, or early refunds would have none.
        known = "SELECT count(*) FROM notifier.webhook_endpoints"
        await outcomes.wait_until_async(lambda: self._count(known, len(merchants) + 1), 60, "endpoints at the notifier")
        return merchants, slow

    async def _count(self, sql: str, expected: int) -> bool:
        rows = await outcomes.fetch(self.stack.database_url, sql)
        return int(rows[0][0]) >= expected

    async def complete(self, lives: list[Lifecycle]) -> None:
        """Wait until every lifecycle so far has its webhook and both customer emails are at the sink."""
        self.lives += lives
        mails = 2 * len(self.lives)
        await outcomes.wait_until(
            lambda: (
                all(life.refund_id in self.receiver.arrivals for life in lives)
                and outcomes.mail_count(self.stack.mail_dir) >= mails
            ),
            TIMEOUT,
            "every webhook and email",
        )

    async def measured(self, name: str, run: Any) -> tuple[list[Lifecycle], dict[str, Any]]:
        """Run a phase; its lifecycles and what it cost (CPU by process, transactions, broker records)."""
        watched, db, stack = self.stack.watched, self.stack.database_url, self.stack
        cpu, tx = watched.cpu(), await outcomes.transactions(db)
        records = await outcomes.records(stack.bootstrap, stack.prefix)
        started = time.time()
        self.driver.calls = Calls()
        lives = await run
        await self.complete(lives)
        seconds = time.time() - started
        cpu_spent = cpu_delta(cpu, watched.cpu())
        await asyncio.sleep(1.0)  # PostgreSQL publishes its statistics at most once a second
        tx_spent = await outcomes.transactions(db) - tx
        records_spent = await outcomes.records(stack.bootstrap, stack.prefix) - records
        n = len(lives)
        return lives, {
            "phase": name,
            "lifecycles": n,
            "started": started,
            "seconds": round(seconds, 2),
            "cpu_ms_per_lifecycle": figures.cpu_per_lifecycle(cpu_spent, n),
            "postgres_tx_per_lifecycle": round(tx_spent / n, 1),
            "postgres_tx_per_s": round(tx_spent / seconds, 1),
            "broker_records_per_lifecycle": round(records_spent / n, 2),
            "broker_records_per_s": round(records_spent / seconds, 1),
            "http": figures.http_figures(self.driver.calls),
        }

    async def run(self) -> dict[str, Any]:
        merchants, slow_merchant = await self.setup()
        sampler = asyncio.create_task(self._sample_rss())
        await self.complete(await self.driver.closed_loop(merchants, SIZES["warmup"], SIZES["concurrency"]))
        out = Path(os.environ.get("BENCH_OUT", ROOT / "var" / "bench"))
        await sql_profile.reset(self.stack.database_url)
        profiler = Profiler(self.stack, out)
        burst, throughput = await self.measured(
            "throughput", self.driver.closed_loop(merchants, SIZES["throughput"], SIZES["concurrency"])
        )
        profiler.stop()
        await sql_profile.write(self.stack.database_url, len(burst), out / "sql-profile.txt")
        steady, open_loop = await self.measured(
            "open_loop", self.driver.open_loop(merchants, SIZES["open_rate"], SIZES["open_count"])
        )
        slow = await self.slow_phase(slow_merchant)
        sampler.cancel()
        rss = {name: round(peak / 2**20, 1) for name, peak in self.stack.watched.peak_rss.items()}
        tps = await capacity.pgbench_tps(self.stack.database_url, SIZES["pgbench_seconds"])
        produce, consume = await capacity.broker_rates(self.stack.bootstrap, self.stack.prefix, SIZES["broker_records"])
        return await self.analyse(burst, throughput, steady, open_loop, slow, rss, tps, produce, consume)

    async def slow_phase(self, merchant: Merchant) -> dict[str, Any]:
        """A backlog of approvals for one processor facing a provider 200 ms away, and for one endpoint whose
        receiver answers in 200 ms: how fast each drains."""
        self.provider += await asyncio.to_thread(outcomes.provider_refunds, self.stack.url("sandbox"))
        await asyncio.to_thread(self.stack.stop_process, "processor")
        await asyncio.to_thread(self.stack.restart, "sandbox", SANDBOX_LATENCY_MS=str(SIZES["slow_provider_ms"]))
        lives = await self.driver.closed_loop([merchant], SIZES["slow"], SIZES["concurrency"])
        await asyncio.to_thread(self.stack.start_service, "processor")
        await self.complete(lives)
        self.provider += await asyncio.to_thread(outcomes.provider_refunds, self.stack.url("sandbox"))
        ids = [life.refund_id for life in lives]
        executed = await outcomes.processor_succeeded_at(self.stack.database_url, ids)
        delivered = sorted(min(t for t, _ in self.receiver.arrivals[i]) for i in ids)
        return {
            "refunds": len(lives),
            "provider_latency_ms": SIZES["slow_provider_ms"],
            "receiver_latency_ms": 200,
            "processor_refunds_per_s": _rate(executed),
            "endpoint_webhooks_per_s": _rate(delivered),
        }

    async def analyse(self, burst: list[Lifecycle], throughput: dict[str, Any], steady: list[Lifecycle],
                      open_loop: dict[str, Any], slow: dict[str, Any], rss: dict[str, float], tps: float | None,
                      produce: float, consume: float) -> dict[str, Any]:  # fmt: skip
        db = self.stack.database_url
        ids = [life.refund_id for life in self.lives]
        succeeded_at = await outcomes.intake_succeeded_at(db, ids)
        sent = outcomes.emails(self.stack.mail_dir)
        kinds = await outcomes.email_kinds(db, (message_id for message_id, _ in sent))
        by_refund: dict[str, list[tuple[float, str]]] = defaultdict(list)
        emailed_at: dict[str, float] = {}
        for message_id, written in sent:
            refund_id, kind = kinds.get(message_id, ("", "unknown"))
            by_refund[refund_id].append((written, kind))
            if kind == "refund_succeeded":
                emailed_at[refund_id] = min(written, emailed_at.get(refund_id, written))
        for phase, lives in ((throughput, burst), (open_loop, steady)):
            done = figures.completed_at(lives, self.receiver, emailed_at)
            first = min(life.started for life in lives)
            phase["lifecycles_per_s"] = round(len(done) / (done[-1] - first), 1) if done else 0.0
            phase["latency_ms"] = figures.latencies(lives, succeeded_at, self.receiver)
            phase["completed_per_second"] = figures.per_second(done, first)
        dead = await outcomes.dead_letters(self.stack.bootstrap, self.stack.prefix)
        counts = figures.count_checks(ids, self.provider, by_refund, self.receiver, set(succeeded_at), dead)
        return {
            "started_at": self.started_at,
            "mode": "quick" if QUICK else "full",
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
            "external": self.stack.external,
            "sizes": SIZES,
            "throughput": throughput,
            "open_loop": open_loop,
            "slow": slow,
            "rss_mb": rss,
            "capacity": {
                "pgbench_tps": tps,
                "broker_produce_per_s": round(produce),
                "broker_consume_per_s": round(consume),
            },
            "counts": counts,
        }

    async def _sample_rss(self) -> None:
        while True:
            self.stack.watched.sample_rss()
            await asyncio.sleep(0.5)


def _rate(times: list[float]) -> float:
    """Completions per second from the first to the last; 0 when there is no span to measure: one completion, or all
    of them stamped by one transaction (the processor's outcomes share their commit's time)."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return round((len(times) - 1) / span, 1) if span > 0 else 0.0


def main() -> None:
    out = Path(os.environ.get("BENCH_OUT", ROOT / "var" / "bench"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="refundflow-bench-"))  # the stack's data and logs
    stack = Stack(workdir)
    try:
        stack.start()
        result = asyncio.run(Bench(stack).run())
    finally:
        stack.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"the stack's data and logs: {workdir}")
    write_report(result, out)
    sys.exit(0 if result["counts"]["ok"] else 1)


if __name__ == "__main__":
    main()
