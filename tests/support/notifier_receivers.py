"""Real receivers for the notifier's tests: an SMTP server (aiosmtpd) and an HTTP server (uvicorn)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually

REJECTING_DOMAIN = "rejected.example"
DEFERRING_DOMAIN = "deferred.example"  # answered 451 (try again later) the first time


class CapturingSmtpHandler:
    """Keeps every accepted message; refuses recipients at ``rejected.example`` with a 550, and defers each
    recipient at ``deferred.example`` once with a 451."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.deferred: list[str] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.endswith("@" + REJECTING_DOMAIN):
            return "550 5.1.1 mailbox unavailable"
        if address.endswith("@" + DEFERRING_DOMAIN) and address not in self.deferred:
            self.deferred.append(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == recipient]


@contextmanager
def smtp_server() -> Iterator[tuple[CapturingSmtpHandler, int]]:
    handler = CapturingSmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    answered: float = 0.0


@dataclass
class HttpReceiver:
    """POST /<name> answers from the name's script, in order (the last step repeats): a status, or
    ``(seconds, status)`` to answer late."""

    port: int = 0
    scripts: dict[str, list[int | tuple[float, int]]] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        record = Received(name, dict(request.headers), await request.body(), time.monotonic())
        self.received[name].append(record)
        script = self.scripts.get(name, [200])
        step = script[min(len(self.received[name]), len(script)) - 1]
        delay, status = step if isinstance(step, tuple) else (0.0, step)
        await asyncio.sleep(delay)
        record.answered = time.monotonic()
        return Response(status_code=status)


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


@asynccontextmanager
async def http_receiver() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(port=free_port())
    app = Starlette(routes=[Route("/{name}", receiver._handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=receiver.port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), timeout=30, interval=0.02)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
