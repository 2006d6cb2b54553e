"""HEAD is answered as GET without the body (RFC 9110 9.3.2): FastAPI's routes answer only the methods they name,
so a HEAD of any GET resource was 405."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """Runs a HEAD request as a GET and sends its status and headers (Content-Length too), not its body."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self._app(as_get, receive, without_body)
        finally:
            # The router names the route it matched in the scope it was given: the metrics and the trace, outside,
            # read it from the HEAD's (its method still HEAD), which labelled every HEAD route="unmatched".
            if "route" in as_get:
                scope["route"] = as_get["route"]
