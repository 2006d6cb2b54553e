"""Run a unit of work whenever PostgreSQL says there is some (LISTEN/NOTIFY), polling as a fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)

# A failure here is a dependency that went away; wait and reconnect rather than die.
RECOVERABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError)


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

    backoff = poll_interval
    while True:
        listener: asyncpg.Connection | None = None
        try:
            listener = await pool.acquire()
            await listener.add_listener(channel, on_notify)
            backoff = poll_interval
            while True:
                wake.clear()
                if not await work():
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=poll_interval)
                    except TimeoutError:
                        pass  # the polling fallback: a missed NOTIFY costs at most one interval
        except RECOVERABLE as exc:
            log.warning("background_job_retrying", job=name, error=repr(exc), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        finally:
            if listener is not None:
                await _release(pool, listener, channel, on_notify)


async def _release(
    pool: asyncpg.Pool, listener: asyncpg.Connection, channel: str, callback: Callable[..., None]
) -> None:
    try:
        await listener.remove_listener(channel, callback)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("listener_release_failed", channel=channel, error=repr(exc))
    await pool.release(listener)
