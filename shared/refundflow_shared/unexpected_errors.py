"""What every service answers for an error no handler answered: one structured log line and a 500 in the API's
error shape, ``{"error": {"code": "internal_error", "message"}}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow_shared.http_metrics import route_template

log = structlog.get_logger(__name__)

UnexpectedErrorAnswer = Callable[[Request], Awaitable[Response]]


async def internal_error(request: Request) -> Response:
    """The API's answer to an unexpected error: nothing of the error itself, which is logged instead."""
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "something went wrong on our side"}}, status_code=500
    )


class AnswerUnexpectedErrors:
    """ASGI middleware inside the request's span and metrics: an error no handler answered is logged once, with its
    route (the template, never the values in the path) and trace, and answered by ``answer``. (A handler for
    ``Exception`` runs outside every middleware, after the span ended, and the error is raised again for the server
    to log a second time.)"""

    def __init__(self, app: ASGIApp, answer: UnexpectedErrorAnswer = internal_error) -> None:
        self._app, self._answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, send_started)
        except Exception as exc:
            log.exception("unhandled_error", error=repr(exc), method=scope["method"], route=route_template(scope))
            if started:
                raise  # the answer is under way: only the server can end it, by closing the connection
            answer = await self._answer(Request(scope, receive))
            await answer(scope, receive, send)
