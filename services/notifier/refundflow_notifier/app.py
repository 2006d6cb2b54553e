"""The notifier's wiring: consumer, the message and webhook workers, the internal API and health endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI

from refundflow_notifier import event_handlers
from refundflow_notifier.internal_api import internal_router
from refundflow_notifier.message_worker import MessageWorker
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import SmtpMailer
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.http_limits import limit_request_bodies
from refundflow_shared.http_service import health_router
from refundflow_shared.service_runtime import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


async def run_workers(runtime: ServiceRuntime, settings: NotifierSettings) -> None:
    """Send queued messages and deliver queued webhooks until cancelled."""
    # Redirects are not followed: a webhook goes where the merchant said, and nowhere else.
    limits = httpx.Limits(max_connections=settings.webhook_max_in_flight + settings.message_concurrency)
    async with httpx.AsyncClient(follow_redirects=False, limits=limits) as http, asyncio.TaskGroup() as workers:
        messages = MessageWorker(runtime.pool, settings, SmtpMailer(settings), http)
        workers.create_task(messages.dispatcher().run(), name="message_worker")
        workers.create_task(WebhookWorker(runtime.pool, settings, http).dispatcher().run(), name="webhook_worker")


def create_app(settings: NotifierSettings) -> FastAPI:
    runtime = ServiceRuntime("notifier", settings, MIGRATIONS)

    def wire(rt: ServiceRuntime) -> None:
        event_handlers.register(rt.consumer, settings)
        rt.run_in_background(run_workers(rt, settings), "notifier_workers")

    app = FastAPI(title="Refundflow notifier", version="0.1.0", lifespan=runtime.lifespan(wire))
    app.include_router(health_router(runtime.readiness))
    limit_request_bodies(app, settings)
    app.include_router(internal_router(runtime, settings))
    return app
