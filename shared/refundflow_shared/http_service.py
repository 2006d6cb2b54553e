"""What every service's HTTP side shares: the app itself with its liveness and readiness endpoints, metrics, event
contract (AsyncAPI) and API reference, and how it is served."""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from refundflow_shared.asyncapi import asyncapi_document
from refundflow_shared.asyncapi_page import render_page
from refundflow_shared.event_contract import ServiceContract
from refundflow_shared.http_limits import limit_request_bodies
from refundflow_shared.http_protocol import BoundedHttpToolsProtocol
from refundflow_shared.http_tracing import FASTAPI_TELEMETRY
from refundflow_shared.metrics_endpoint import metrics_router
from refundflow_shared.openapi_page import render_page as render_api_reference
from refundflow_shared.reference_html import PAGE_HEADERS
from refundflow_shared.settings import ServiceSettings
from refundflow_shared.unexpected_errors import AnswerUnexpectedErrors, UnexpectedErrorAnswer, internal_error

if TYPE_CHECKING:  # the runtime imports Readiness from here
    from refundflow_shared.service_runtime import ServiceRuntime


@dataclass(frozen=True)
class Readiness:
    """What /readyz checked (each true or false), which background jobs died, and whether the broker answered its
    last check (shown, not deciding)."""

    checks: dict[str, bool]
    dead_jobs: list[str] = field(default_factory=list)
    broker_reachable: bool = True

    @property
    def ready(self) -> bool:
        return all(self.checks.values())


def service_app(
    runtime: ServiceRuntime,
    settings: ServiceSettings,
    title: str,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    description: str = "",
    answer_unexpected_error: UnexpectedErrorAnswer = internal_error,
) -> FastAPI:
    """A service's app with what every service serves: ``/healthz`` and ``/readyz``, ``/metrics``, its event contract
    and its API reference (``contract_router``), with request bodies bounded, and an error no handler answered logged
    and answered by ``answer_unexpected_error`` (the API's 500). FastAPI's own ``/docs`` and ``/redoc`` are off: they
    load their scripts from CDNs."""
    app = FastAPI(
        title=title,
        version="0.1.0",
        description=description,
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    limit_request_bodies(app, settings)
    app.add_middleware(AnswerUnexpectedErrors, answer=answer_unexpected_error)
    app.include_router(health_router(runtime))
    app.include_router(metrics_router(runtime.refresh_metrics))
    app.include_router(contract_router(runtime.contract, settings.topic_prefix))
    return app


def health_router(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", responses={503: {"description": "a background job died: restart the process"}})
    async def healthz() -> JSONResponse:
        """The process is alive and every background job runs (the liveness probe: it reads nothing else). A job
        that died is never started again in the process, so the answer is 503 until the process is restarted."""
        if dead := runtime.dead_jobs:
            return JSONResponse({"status": "dead", "dead_jobs": dead}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", responses={503: {"description": "not ready: the same body, status unavailable"}})
    async def readyz() -> JSONResponse:
        """The database is reachable and every background job is running; whether the broker is, too, is shown."""
        state = await runtime.readiness()
        body: dict[str, object] = {"status": "ready" if state.ready else "unavailable", "checks": state.checks}
        body["broker_reachable"] = state.broker_reachable
        if state.dead_jobs:
            body["dead_jobs"] = state.dead_jobs
        return JSONResponse(body, status_code=200 if state.ready else 503)

    return router


def contract_router(contract: ServiceContract, topic_prefix: str) -> APIRouter:
    """``/asyncapi.json`` and the page ``/asyncapi``: the topics the service receives on and sends to, as deployed
    (the runtime refuses to consume or publish anything else). And ``/docs``, the HTTP API (FastAPI's
    ``/openapi.json``) as a page of ours."""
    router = APIRouter(tags=["contract"])
    document = asyncapi_document(contract, topic_prefix)
    page = render_page(document)
    api_reference: list[str] = []  # rendered at the first request: the app has all its routes by then

    @router.get("/asyncapi.json")
    async def asyncapi_json() -> JSONResponse:
        """The AsyncAPI 3.0 document of the topics this service consumes and publishes, dead-letter topics too."""
        return JSONResponse(document)

    @router.get("/asyncapi", response_class=HTMLResponse)
    async def asyncapi_page() -> HTMLResponse:
        """The same document as a page: channels, messages and their payload fields."""
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_reference_page(request: Request) -> HTMLResponse:
        if not api_reference:
            api_reference.append(render_api_reference(request.app.openapi()))
        return HTMLResponse(api_reference[0], headers=PAGE_HEADERS)

    return router


def server_config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn with limits: idle keep-alive connections close, connections past the limit get 503, request heads
    are bounded (``http_protocol``), X-Forwarded-For is believed only from ``trusted_proxies``. Bodies are bounded
    by ``http_limits`` in the app."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        http=BoundedHttpToolsProtocol,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_concurrency,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        forwarded_allow_ips=settings.trusted_proxies,  # never uvicorn's FORWARDED_ALLOW_IPS: one setting says it
    )


# New container objects that may live at once before the cycle collector runs (Python's default is 700). A busy
# service always has thousands (requests and events in flight), and at 700 it kept collecting them for nothing:
# in a quick `make bench`, intake ran about 210 collections (0.3 ms of CPU per refund) that it no longer runs.
# Cyclic garbage is still collected, once that many new objects have piled up (peak RSS in the bench: unchanged).
YOUNG_OBJECTS_PER_COLLECTION = 20_000


def settle_the_collector() -> None:
    """Tune the cycle collector for a long-running service, once everything is loaded."""
    gc.freeze()  # what is loaded by now lives as long as the process: the collector need not scan it again and again
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, older, oldest)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app in the foreground; uvicorn's own logging goes through our JSON setup."""
    settle_the_collector()
    uvicorn.Server(server_config(app, settings)).run()
