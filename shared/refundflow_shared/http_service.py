"""What every service's HTTP side shares: liveness and readiness endpoints, and how it is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from refundflow_shared.settings import ServiceSettings


def health_router(readiness: Callable[[], Awaitable[dict[str, bool]]]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """The database and the broker are reachable."""
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
        )

    return router


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app in the foreground; uvicorn's own logging goes through our JSON setup."""
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
