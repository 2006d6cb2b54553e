"""Run a unit of work whenever PostgreSQL says there is some (LISTEN/NOTIFY), polling as a fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from refundflow_shared.backoff import exponential
from refundflow_shared.transient_faults import broker_is_unavailable, database_is_unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

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
    listener = _listener_for(pool)
    failures = 0
    try:
        while True:
            try:
                await listener.listen(channel, wake)
                wake.clear()
                if not await work():  # then poll as a fallback: a missed NOTIFY costs one interval
                    await wait_until_set(wake, poll_interval)
                failures = 0
            except Exception as exc:
                if not is_recoverable(exc):
                    raise
                failures += 1
                await _wait_out(exc, failures, name=name, base=poll_interval)
    finally:
        await listener.forget(channel, wake)


async def retry_until_done(work: Callable[[], Awaitable[T]], *, name: str, base: float = 1.0) -> T:
    """Run ``work`` until it goes through, waiting out a dependency that went away as ``run_on_notify``'s jobs do (for
    a job's one-off work before its loop, such as a start-up read); anything else is raised."""
    failures = 0
    while True:
        try:
            return await work()
        except Exception as exc:
            if not is_recoverable(exc):
                raise
            failures += 1
            await _wait_out(exc, failures, name=name, base=base)


async def _wait_out(exc: Exception, failures: int, *, name: str, base: float) -> None:
    """A job's ``failures``-th recoverable failure in a row (a dependency went away): waited out, longer each time."""
    backoff = exponential(failures, base=base, cap=30.0)
    log.warning("background_job_retrying", job=name, error=repr(exc), retry_in=backoff)
    await asyncio.sleep(backoff)


async def wait_until_set(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed.

    Not ``asyncio.wait_for``: on Python 3.11 it returns instead of raising when a cancel lands just after the event
    was set, and a job's loop that swallowed its cancel never ends (the service then never stops)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class _Listener:
    """The one connection of a pool that LISTENs on every channel the process's jobs wait on.

    One, not one per job: at each commit that notifies, PostgreSQL signals every listening backend of the
    database, whatever it listens to (measured here: about 13 µs of the server's CPU for each, at each such
    commit). Lost, it wakes every job, and the next ``listen`` connects again."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: dict[str, set[asyncio.Event]] = {}  # channel -> the jobs' events
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def listen(self, channel: str, wake: asyncio.Event) -> None:
        """NOTIFY on ``channel`` sets ``wake`` from now on (connecting again if the connection was lost)."""
        async with self._lock:
            _listeners.setdefault(self._pool, self)
            self._waiting.setdefault(channel, set()).add(wake)
            if self._conn is not None and _is_lost(self._conn):
                await self._give_back(self._conn)
            if self._conn is None:
                conn = await self._pool.acquire()
                try:
                    for name in self._waiting:
                        await conn.add_listener(name, self._notified)
                except BaseException:
                    conn.terminate()  # never back to the pool with some of our LISTENs on it
                    await self._give_back(conn)
                    raise
                conn.add_termination_listener(self._lost)
                self._conn = conn
            else:
                await self._conn.add_listener(channel, self._notified)  # LISTENs once per channel

    async def forget(self, channel: str, wake: asyncio.Event) -> None:
        """``wake`` is no longer set; a channel no job waits on is unlistened, and a connection no job waits on
        goes back to the pool."""
        async with self._lock:
            waiting = self._waiting.get(channel, set())
            waiting.discard(wake)
            if waiting:
                return
            self._waiting.pop(channel, None)
            idle = not self._waiting
            if idle and _listeners.get(self._pool) is self:
                del _listeners[self._pool]
            conn = self._conn
            if conn is None:
                return
            if _is_lost(conn):
                await self._give_back(conn)
                return
            if idle:
                self._conn = None
                conn.remove_termination_listener(self._lost)
            try:
                await conn.remove_listener(channel, self._notified)  # the pool does not reset connections
                if idle:
                    await self._pool.release(conn)
            except Exception as exc:
                if not is_recoverable(exc):
                    raise
                log.warning("listener_release_failed", channel=channel, error=repr(exc))
                conn.terminate()  # whoever still waits is woken (``_lost``) and connects again
                await self._give_back(conn)

    async def _give_back(self, conn: asyncpg.Connection) -> None:
        """Return a lost (or terminated) connection to the pool, which replaces it."""
        self._conn = None
        with contextlib.suppress(asyncpg.InterfaceError):  # raised when asyncpg released it already
            await self._pool.release(conn)

    def _notified(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        for wake in self._waiting.get(channel, ()):
            wake.set()

    def _lost(self, _conn: object) -> None:
        for waiting in self._waiting.values():
            for wake in waiting:
                wake.set()


def _is_lost(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the pool took back a connection it saw closed
        return True


# The listener of each pool that has jobs waiting (pools cannot be weakly referenced: removed when idle).
_listeners: dict[asyncpg.Pool, _Listener] = {}


def _listener_for(pool: asyncpg.Pool) -> _Listener:
    return _listeners.setdefault(pool, _Listener(pool))
