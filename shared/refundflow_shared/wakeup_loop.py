"""Run a unit of work whenever PostgreSQL says there is some (LISTEN/NOTIFY), polling as a fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from refundflow_shared.backoff import exponential
from refundflow_shared.transient_faults import broker_is_unavailable, database_is_unavailable

log = structlog.get_logger(__name__)

# The database went away or refused a statement: wait and reconnect rather than die.
RECOVERABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def is_recoverable(exc: BaseException) -> bool:
    """A dependency that went away. Anything else (a broker refusing a record for good, a bug) ends the job:
    retrying it could only loop, and a dead job shows on /readyz."""
    return isinstance(exc, RECOVERABLE) or database_is_unavailable(exc) or broker_is_unavailable(exc)


async def run_on_notify(
    pool: asyncpg.Pool,
    channel: str,
    work: Callable[[], Awaitable[bool]],
    *,
    poll_interval: float,
    name: str,
) -> None:
    """Call ``work`` until cancelled. ``work`` returns True when more may be waiting (call again at once)."""
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    failures = 0
    while True:
        listener: asyncpg.Connection | None = None
        try:
            listener = await pool.acquire()
            await listener.add_listener(channel, on_notify)
            failures = 0
            while True:
                wake.clear()
                if not await work():
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=poll_interval)
                    except TimeoutError:
                        pass  # the polling fallback: a missed NOTIFY costs at most one interval
        except Exception as exc:
            if not is_recoverable(exc):
                raise
            failures += 1
            backoff = exponential(failures, base=poll_interval, cap=30.0)
            log.warning("background_job_retrying", job=name, error=repr(exc), retry_in=backoff)
            await asyncio.sleep(backoff)
        finally:
            if listener is not None:
                await _release(pool, listener, channel, on_notify)


async def _release(
    pool: asyncpg.Pool, listener: asyncpg.Connection, channel: str, callback: Callable[..., None]
) -> None:
    # When the server closed the connection, asyncpg has already discarded it (or does so when a reset fails):
    # either way the loop takes another.
    try:
        await listener.remove_listener(channel, callback)
        await pool.release(listener)
    except Exception as exc:
        if not is_recoverable(exc):
            raise
        log.warning("listener_release_failed", channel=channel, error=repr(exc))
        with contextlib.suppress(asyncpg.InterfaceError):  # raised when asyncpg released it already
            listener.terminate()
            await pool.release(listener)
