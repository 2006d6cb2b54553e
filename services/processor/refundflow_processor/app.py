"""The processor's wiring: consumer, refund executor, outbox relay and health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from refundflow_shared.http_health import health_router
from refundflow_shared.service_runtime import ServiceRuntime

from refundflow_processor import event_handlers
from refundflow_processor.payment_provider import PaymentProvider
from refundflow_processor.refund_executor import RefundExecutor
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.stripe_provider import StripeProvider

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ProcessorSettings, provider: PaymentProvider | None = None) -> FastAPI:
    runtime = ServiceRuntime("processor", settings, MIGRATIONS)
    provider = provider or StripeProvider(
        settings.stripe_api_key.get_secret_value(), settings.stripe_api_base, settings.stripe_timeout_seconds
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.open()
        event_handlers.register(runtime.consumer)
        await runtime.start()
        runtime.run_in_background(RefundExecutor(runtime.pool, provider, settings).run(), "refund_executor")
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="Refundflow processor", version="0.1.0", lifespan=lifespan)
    app.include_router(health_router(runtime.readiness))
    return app
