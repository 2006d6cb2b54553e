"""Real receivers for the notifier's tests: an SMTP server (aiosmtpd) and an HTTP server (uvicorn)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.infrastructure import free_port
from tests.support.probe_service import eventually

SMTP_USER, SMTP_PASSWORD = "refundflow", "relay-password"
REJECTING_DOMAIN = "rejected.example"
DEFERRING_DOMAIN = "deferred.example"  # answered 451 (try again later) the first time


class CapturingSmtpHandler:
    """Keeps every accepted message; refuses recipients at ``rejected.example`` with a 550, and defers each
    recipient at ``deferred.example`` once with a 451. Notes, per message, whether it came over TLS and on
    which connection, every AUTH attempt with whether the connection was encrypted at that moment, and NOOPs."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.deferred: list[str] = []
        self.over_tls: list[bool] = []
        self.connections: set[int] = set()
        self.auth_attempts: list[tuple[str, bool]] = []  # (user, encrypted)
        self.noops = 0

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

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope, arg: str) -> str:
        self.noops += 1
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else str(content).encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.over_tls.append(session.ssl is not None)
        self.connections.add(id(session))
        return "250 Message accepted for delivery"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.auth_attempts.append((data.login.decode(), session.ssl is not None))
        success = (data.login, data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=success, handled=False)  # not handled: a refusal is answered 535, as relays do

    def to(self, recipient: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == recipient]


@contextmanager
def smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    with_auth: bool = False,
    port: int | None = None,
    handler: CapturingSmtpHandler | None = None,
) -> Iterator[tuple[CapturingSmtpHandler, int]]:
    """An SMTP server on 127.0.0.1; ``starttls`` offers STARTTLS with that context; ``with_auth`` offers AUTH
    even on an unencrypted connection (as a careless relay would), accepting SMTP_USER / SMTP_PASSWORD."""
    handler = handler or CapturingSmtpHandler()
    port = port or free_port()
    options: dict[str, Any] = {"tls_context": starttls}
    if with_auth:
        options |= {"authenticator": handler.authenticate, "auth_require_tls": False}
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
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
    """POST /<name> answers from the name's script, in order (the last step repeats): a status,
    ``(seconds, status)`` to answer late, or ``(gate, status)`` to answer once the test sets the gate."""

    port: int = 0
    scripts: dict[str, list[int | tuple[float | asyncio.Event, int]]] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        record = Received(name, dict(request.headers), await request.body(), time.monotonic())
        self.received[name].append(record)
        script = self.scripts.get(name, [200])
        step = script[min(len(self.received[name]), len(script)) - 1]
        wait, status = step if isinstance(step, tuple) else (0.0, step)
        if isinstance(wait, asyncio.Event):
            await wait.wait()
        else:
            await asyncio.sleep(wait)
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
