"""Request bodies over a size cap are refused with 413 before they are read whole, and before authentication.

FastAPI reads and parses a body before it resolves dependencies (the API key check among them), so without this
anyone could make a service buffer gigabytes. A declared ``Content-Length`` over the cap is answered at once,
unread; a streamed (chunked) body is counted as it arrives and cut off at the cap.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow_shared.settings import ServiceSettings


class _BodyTooLarge(Exception):
    pass


def too_large_response(max_bytes: int) -> tuple[Message, Message]:
    body = json.dumps(
        {"error": {"code": "request_too_large", "message": f"request bodies are limited to {max_bytes} bytes"}}
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestBodyLimit:
    """ASGI middleware: 413 ``request_too_large`` for a body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 18 or int(declared) > self._max_bytes):
            await self._refuse(send)
            return
        received = 0
        cut_off = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    cut_off = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if cut_off:
                return  # the app's answer to a body it could not read; ours follows
            answered = True
            await send(message)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except Exception:
            if not cut_off:
                raise
        if cut_off and not answered:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        start, body = too_large_response(self._max_bytes)
        await send(start)
        await send(body)


def limit_request_bodies(app: FastAPI, settings: ServiceSettings) -> None:
    """Install the body cap (HTTP_MAX_BODY_BYTES) in front of everything else the app does."""
    app.add_middleware(RequestBodyLimit, max_bytes=settings.http_max_body_bytes)
