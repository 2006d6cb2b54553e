"""Real HTTP servers inside the test's own event loop: an ASGI app on a 127.0.0.1 port, and a raw hostile one."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support.infrastructure import free_port


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """Run ``app`` (with its lifespan) until the block ends; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _canned(status: str, content_type: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        content_type.encode(),
        len(body),
        body,
    )


_CANNED = {
    "html_408": _canned("408 Request Timeout", "text/html", b"<html><body>Request Timeout</body></html>"),
    "html_404": _canned("404 Not Found", "text/html", b"<html><body>No route to upstream</body></html>"),
    "idempotency_error": _canned(
        "400 Bad Request",
        "application/json",
        b'{"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with'
        b' the same parameters they were first used with."}}',
    ),
    # A subscription whose period ends in the year 19391: a Unix time, but past any date Python can hold.
    "far_future_subscription": _canned(
        "200 OK",
        "application/json",
        b'{"id": "sub_1", "object": "subscription", "status": "active", "current_period_end": 549755813888}',
    ),
}


@dataclass
class HostileHttpServer:
    """A raw HTTP/1.1 server on real sockets, answering every POST the way ``behaviour`` says:

    ``drip``: 200, then one byte a second for as long as the client listens; ``flood``: 200, then
    ``flood_bytes`` (exactly) as fast as the client reads; ``ok``: an empty 200; ``redirect``: a 307 to ``redirect_to``;
    ``cut_short``: a 200 promising 400 bytes, a few of them, then the connection closed; ``html_408`` and
    ``html_404``: a proxy's pages; ``idempotency_error``: Stripe's 400 for a key that already ran with other parameters;
    ``far_future_subscription``: a subscription whose period end no date can hold.
    It counts every connection it accepts (a refused call must not even connect), the bytes it managed to send,
    and the most requests that were open at once: in all, per path, and per delivery (path and ``webhook-id``).
    """

    behaviour: str = "ok"
    flood_bytes: int = 0
    redirect_to: str = ""
    port: int = 0
    connections: int = 0
    bytes_sent: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Requests open now, and the most open at once: "*" for all, per path, and per "<path> <webhook-id>".
    open_now: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_open: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def open_total(self) -> int:
        return self.open_now["*"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                path = request_line.split(" ")[1].lstrip("/")
                self.requests.append((path, headers))
                keys = {"*", path, f"{path} {headers.get('webhook-id', '')}"}
                for key in keys:
                    self.open_now[key] += 1
                    self.most_open[key] = max(self.most_open[key], self.open_now[key])
                try:
                    await self._answer(reader, writer)
                finally:
                    for key in keys:
                        self.open_now[key] -= 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: that is what a capped or timed-out call does
        finally:
            self.handlers.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.behaviour == "ok":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if self.behaviour in _CANNED:
            writer.write(_CANNED[self.behaviour])
            await writer.drain()
            return
        if self.behaviour == "redirect":
            writer.write(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {self.redirect_to}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            return
        if self.behaviour == "cut_short":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{"id": "re')
            await writer.drain()
            raise ConnectionResetError("the answer is cut short")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        if self.behaviour == "drip":
            while True:
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                self.bytes_sent += 1
                try:
                    async with asyncio.timeout(1.0):  # not wait_for: on 3.11 it may swallow the server's cancel
                        closed = await reader.read(1) == b""
                except TimeoutError:
                    continue
                if closed:
                    raise ConnectionResetError("the client closed the connection")
        left = self.flood_bytes
        while left > 0:
            chunk = b"x" * min(left, 65536)
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()  # backpressure: this waits while the client does not read
            self.bytes_sent += len(chunk)
            left -= len(chunk)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@asynccontextmanager
async def hostile_http_server(
    behaviour: str = "ok",
    *,
    flood_bytes: int = 0,
    redirect_to: str = "",
    hosts: tuple[str, ...] = ("127.0.0.1",),
) -> AsyncIterator[HostileHttpServer]:
    """Listen on one free port on every host in ``hosts`` (e.g. 127.0.0.1 and ::1)."""
    server = HostileHttpServer(behaviour, flood_bytes, redirect_to)
    for _ in range(20):
        server.port = free_port()
        try:
            listening = await asyncio.start_server(server._serve, host=list(hosts), port=server.port)
            break
        except OSError:
            continue  # the port was free on 127.0.0.1 but not on another host: pick another
    else:
        raise RuntimeError("no port free on every host")
    try:
        yield server
    finally:
        listening.close()
        for handler in list(server.handlers):  # a dripping answer never ends on its own
            handler.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)
        await listening.wait_closed()


@asynccontextmanager
async def serving_as_deployed(app: Any, settings: Any) -> AsyncIterator[str]:
    """Run an app whose lifespan already runs (the harness's) under the uvicorn configuration the service runs with
    (``server_config``: its limits and trusted proxies), on a free 127.0.0.1 port; yields its base URL."""
    from refundflow_shared.http_service import server_config

    config = server_config(app, settings)
    config.host, config.port, config.lifespan = "127.0.0.1", free_port(), "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
