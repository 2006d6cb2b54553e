"""A background job's wait for a NOTIFY ends when the job is cancelled, however the cancel and the NOTIFY interleave:
a cancel swallowed once leaves the job looping, and the service's shutdown waiting on it for ever."""

from __future__ import annotations

import asyncio

import pytest

from refundflow_shared.wakeup_loop import wait_until_set


async def yield_to_the_loop(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


@pytest.mark.parametrize("steps_between", range(6))
async def test_a_cancel_just_after_the_event_was_set_still_cancels_the_wait(steps_between: int) -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_until_set(event, 30))
    await yield_to_the_loop(3)
    event.set()  # a NOTIFY arrives...
    await yield_to_the_loop(steps_between)
    if not waiting.cancel():  # ...and the service stops before or after the wait has seen it
        assert waiting.done() and waiting.exception() is None, "it finished on its own first, as it may"
        return
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_the_wait_ends_when_the_event_is_set_or_the_time_is_up() -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_until_set(event, 0.05)
    assert loop.time() - started >= 0.05, "no NOTIFY: the polling interval passed"
    loop.call_later(0.01, event.set)
    await asyncio.wait_for(wait_until_set(event, 30), timeout=5)
