"""A lean HTTP/1.1 client (keep-alive pool) and server for the bench's load and its webhook receiver.

The load generator shares two cores with the stack it measures: a general-purpose client would take a good part
of the CPU the services need, so requests and answers here are only what the bench sends and the stack answers
(JSON bodies with a Content-Length; no chunking, no redirects, no TLS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

_IDLE_SECONDS = 3.0  # below uvicorn's keep-alive timeout: an idle connection is never reused once closed


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status, self.body = status, body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.idle_since = reader, writer, time.monotonic()


class HttpClient:
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if time.monotonic() - conn.idle_since < _IDLE_SECONDS and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    async def request(
        self, method: str, path: str, body: object = None, token: str | None = None, idempotency_key: str | None = None
    ) -> object:
        """Send one request; the JSON answer, or HttpError for a status of 400 or more."""
        payload = orjson.dumps(body) if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if idempotency_key:
            head += f"Idempotency-Key: {idempotency_key}\r\n"
        conn = await self._connection()
        try:
            conn.writer.write(head.encode() + b"\r\n" + payload)
            status, headers = _head(await conn.reader.readuntil(b"\r\n\r\n"))
            answer = await conn.reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            conn.writer.close()
            raise
        if headers.get("connection") == "close":
            conn.writer.close()
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        if status >= 400:
            raise HttpError(status, answer)
        return orjson.loads(answer) if answer else None

    async def close(self) -> None:
        for conn in self._idle:
            conn.writer.close()
        self._idle = []


def _head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


# (path, headers, body) -> seconds to wait before answering 200
Handler = Callable[[str, dict[str, str], bytes], float]


async def serve(host: str, port: int, handler: Handler) -> asyncio.Server:
    """A server answering every POST 200 with no body, after the delay ``handler`` returns for it."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line, *_ = raw = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)
                _, headers = _head(b"HTTP/1.1 0 -\r\n" + raw[1])
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                delay = handler(request_line.split(b" ")[1].decode(), headers, body)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went, or the bench is over
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port, backlog=512)


async def gather_bounded(jobs: Sequence[Callable[[], Awaitable[object]]], concurrency: int) -> list[object]:
    """Run the jobs with at most ``concurrency`` at once; their results in order."""
    results: list[object] = [None] * len(jobs)
    next_job = iter(range(len(jobs)))

    async def worker() -> None:
        for index in next_job:
            results[index] = await jobs[index]()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results
