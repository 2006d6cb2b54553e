"""A span per HTTP request, continuing the caller's ``traceparent`` header (a malformed one starts a new trace).

Named after the route's template, never the path: a path may hold a one-time link's token.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow_shared import tracing

# FastAPI's own request spans (on once a tracer provider is set) stay off: they record the path and query (a portal
# link's token) and make four spans a request. Ours is one span, named by the route. Its metrics and logs too: we
# export neither, and with all three off it skips looking up three providers for every request. Every app passes
# this.
FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: noise, many times a minute


class TraceRequests:
    """ASGI middleware: each request runs in its own span; the response says its trace in ``traceresponse``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self._app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None)
        method = scope["method"]
        with tracing.span(method, traceparent=incoming, continues=True, kind=SpanKind.SERVER) as span:
            answer = tracing.current_traceparent()

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if answer is not None:
                        message["headers"] = [*message.get("headers", []), (b"traceresponse", answer.encode())]
                await send(message)

            try:
                await self._app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                span.update_name(f"{method} {route}" if isinstance(route, str) else method)
                span.set_attribute("http.request.method", method)


def trace_requests(app: FastAPI) -> None:
    """Install the request spans in front of everything else the app does (add it last)."""
    app.add_middleware(TraceRequests)
