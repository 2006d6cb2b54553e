"""The notifier's wiring: consumer, mailer, outbox relay and health endpoints."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from refundflow_shared.http_service import health_router
from refundflow_shared.service_runtime import ServiceRuntime

from refundflow_notifier import event_handlers
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import SmtpMailer

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotifierSettings) -> FastAPI:
    runtime = ServiceRuntime("notifier", settings, MIGRATIONS)
    app = FastAPI(
        title="Refundflow notifier",
        version="0.1.0",
        lifespan=runtime.lifespan(lambda rt: event_handlers.register(rt.consumer, SmtpMailer(settings), settings)),
    )
    app.include_router(health_router(runtime.readiness))
    return app
