"""When a test times out, its failure names what every asyncio task was waiting on.

pytest-timeout dumps the threads' stacks, but a hung test here is nearly always a coroutine awaiting something (a
consumer that will not stop, a pool that will not close): the thread sits in the event loop's `select`. The dump
goes into the failure's message, so that it also reaches the report from an xdist worker."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
import pytest_timeout


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """As pytest-timeout's own `signal` method, with the tasks' stacks in the failure; other methods are its own."""
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None

    def on_timeout(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        if not settings.disable_debugger_detection and pytest_timeout.is_debugging():
            return
        pytest.fail(f"Timeout (>{settings.timeout}s) in {item.nodeid}\n{stacks()}")

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's cancel hook calls it
    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def stacks() -> str:
    """Every task of the running event loop, then every other thread, each with its stack."""
    out = io.StringIO()
    try:
        tasks = asyncio.all_tasks()  # the signal interrupts the loop's own thread, inside its run
    except RuntimeError:  # no loop running: a test that is not async
        tasks = set()
    for task in tasks:
        frames = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in awaiting(task.get_coro()))
        out.write(f"~~~ task {task.get_name()}, outermost await first\n{''.join(frames.format())}")
    current = threading.get_ident()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident != current:
            out.write(f"~~~ thread {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}")
    return out.getvalue()


def awaiting(awaitable: Any) -> Iterator[FrameType]:
    """The frames of a suspended coroutine and of everything it awaits, down to the innermost.

    Task.print_stack shows only the task's own coroutine. An async generator's `__anext__` hides its generator,
    so that is found among the awaiting frame's locals: the one running (a fixture's `yield`, say)."""
    frame: FrameType | None = None
    while awaitable is not None:
        for frame_name, next_name in (("cr_frame", "cr_await"), ("ag_frame", "ag_await"), ("gi_frame", "gi_yieldfrom")):
            if hasattr(awaitable, frame_name):
                frame = getattr(awaitable, frame_name)
                if frame is not None:
                    yield frame
                awaitable = getattr(awaitable, next_name)
                break
        else:
            running = [v for v in (frame.f_locals.values() if frame else ()) if getattr(v, "ag_running", False)]
            awaitable = running[0] if running else None
