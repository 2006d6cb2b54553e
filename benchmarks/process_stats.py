"""CPU time and memory of the stack's processes, read from /proc (Linux).

A process tree's CPU is what its live processes used plus what its exited children used: PostgreSQL's
backends come and go, and the kernel adds an exited child's time to its parent's cutime/cstime when reaped.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) of the tree under ``pid``: live processes, plus what exited children left the root."""
    total = 0.0
    for index, member in enumerate(tree(pid)):
        fields = _stat(member)
        if fields is None:
            continue
        # Fields 14-17 of stat (utime, stime, cutime, cstime); indices shifted by the two fields cut off.
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        total += utime + stime + (cutime + cstime if index == 0 else 0)
    return total / _TICK


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` alone (a service is one process)."""
    fields = _stat(pid)
    return int(fields[21]) * _PAGE if fields else 0


@dataclass
class Watched:
    """The processes whose CPU and memory a run reports, by name; a tree for PostgreSQL."""

    pids: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def sample_rss(self) -> None:
        for name, pid in self.pids.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss_bytes(pid))


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


class Profiler:
    """With BENCH_PYSPY=<path to py-spy>, samples every Python process of the stack while it runs (py-spy's raw
    format: one collapsed stack and its count per line, in ``profile-<name>.txt``)."""

    def __init__(self, stack: object, out: Path) -> None:
        self._running: list[subprocess.Popen[bytes]] = []
        pyspy = os.environ.get("BENCH_PYSPY")
        if not pyspy:
            return
        watched: Watched = stack.watched  # type: ignore[attr-defined]
        for name, pid in watched.pids.items():
            if name in ("postgres", "broker"):
                continue
            command = [pyspy, "record", "-p", str(pid), "-r", "200", "--nonblocking", "-f", "raw"]
            self._running.append(subprocess.Popen([*command, "-o", str(out / f"profile-{name}.txt")]))

    def stop(self) -> None:
        for process in self._running:
            process.send_signal(signal.SIGINT)
        for process in self._running:
            process.wait(timeout=60)
