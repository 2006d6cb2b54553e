"""A merchant's webhook host whose name server never answers holds one lookup thread, and delays nobody else.

A lookup (``getaddrinfo``) blocks a thread until the OS resolver gives up, and nothing can stop it once started: a
call's deadline ends the call, not the lookup. Were each call to start its own, a merchant whose endpoints keep
failing that way would hold every lookup thread, and every other merchant's calls would wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

import pytest

from refundflow_notifier.outbound_http import PublicAddressResolver
from refundflow_shared.outbound_urls import UrlNotAllowed

pytestmark = pytest.mark.asyncio(loop_scope="session")

SLOW = "hooks.slow.test"


class NameServers:
    """``getaddrinfo`` as the OS runs it, blocking its thread: the slow host's answer never comes until released."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.slow_lookups = 0
        self.most_slow_lookups_at_once = 0
        self._running = 0
        self._lock = threading.Lock()

    def getaddrinfo(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host != SLOW:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        with self._lock:
            self.slow_lookups += 1
            self._running += 1
            self.most_slow_lookups_at_once = max(self.most_slow_lookups_at_once, self._running)
        try:
            self.released.wait(30)
        finally:
            with self._lock:
                self._running -= 1
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


async def test_a_host_whose_name_server_never_answers_holds_one_thread_and_delays_no_other_host() -> None:
    names = NameServers()
    resolver = PublicAddressResolver(allow_private=True, threads=4, lookup=names.getaddrinfo)

    async def delivery_to_the_slow_host() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):  # the delivery's deadline
                await resolver.resolve(SLOW, 443)

    try:
        for _ in range(5):  # wave after wave of deliveries that time out, more than there are threads
            await asyncio.gather(*(delivery_to_the_slow_host() for _ in range(8)))

        async with asyncio.timeout(2):
            [answer] = await resolver.resolve("hooks.fast.test", 443)
        assert answer["host"] == "127.0.0.1"
        assert names.most_slow_lookups_at_once == 1

        names.released.set()  # the OS resolver gives up at last: the call is refused, and the next one looks again
        with pytest.raises(UrlNotAllowed):
            await resolver.resolve(SLOW, 443)
        looked_up = names.slow_lookups
        with pytest.raises(UrlNotAllowed):
            await resolver.resolve(SLOW, 443)
        assert names.slow_lookups == looked_up + 1, "a failed lookup is not kept as the answer"
    finally:
        names.released.set()
        await resolver.close()
