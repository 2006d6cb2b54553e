"""Intake's wiring: the HTTP API, its consumers and the backbone, in one place."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from refundflow_shared.http_service import health_router
from refundflow_shared.service_runtime import ServiceRuntime

from refundflow_intake import event_handlers
from refundflow_intake.api.errors import install_error_handlers
from refundflow_intake.api.routes import merchants, payments, refunds
from refundflow_intake.settings import IntakeSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IntakeSettings) -> FastAPI:
    runtime = ServiceRuntime("intake", settings, MIGRATIONS)
    app = FastAPI(
        title="Refundflow intake",
        version="0.1.0",
        description="Payments, refund requests and the merchant's decisions.",
        lifespan=runtime.lifespan(lambda rt: event_handlers.register(rt.consumer)),
    )
    app.state.settings = settings
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(health_router(runtime.readiness))
    for module in (merchants, payments, refunds):
        app.include_router(module.router)
    return app
