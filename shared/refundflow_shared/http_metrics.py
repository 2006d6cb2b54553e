"""HTTP request metrics by route template (never the raw path: one series per route, not per id), and the scope
in which a request's database changes are counted once they committed."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow_shared.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, counts_on_commit

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """ASGI middleware, outermost: counts and times every request by method, route template and status.

    A request's transactions commit before it is answered, and one whose change was rolled back is answered
    with an error: counts taken after commit (``count_after_commit``) are kept for answers below 400."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an error that escaped every handler is answered 500 by the server

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            async with counts_on_commit() as pending:
                await self._app(scope, receive, send_status)
                if status >= 400:
                    pending.discard()
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/refunds/{refund_id}``), or ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"
