"""The processor's wiring: consumer, refund executor, subscription cancels and extensions, sync job, provider
webhooks, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from fastapi import FastAPI

from refundflow_processor import event_handlers
from refundflow_processor.metered_provider import MeteredProvider
from refundflow_processor.payment_provider import PaymentProvider
from refundflow_processor.provider_pause import ProviderPause
from refundflow_processor.provider_webhooks import provider_webhook_router
from refundflow_processor.refund_executor import RefundExecutor
from refundflow_processor.refund_sync import RefundSync
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.stripe_provider import StripeProvider
from refundflow_processor.subscription_cancels import SubscriptionCancelExecutor
from refundflow_processor.subscription_extensions import SubscriptionExtensionExecutor
from refundflow_shared.contention_retries import answer_database_busy_as_json
from refundflow_shared.http_service import service_app
from refundflow_shared.service_runtime import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"

log = structlog.get_logger(__name__)


def create_app(settings: ProcessorSettings, provider: PaymentProvider | None = None) -> FastAPI:
    runtime = ServiceRuntime("processor", settings, MIGRATIONS)
    stripe_provider = None
    if provider is None:
        key = settings.stripe_api_key.get_secret_value()
        provider = stripe_provider = StripeProvider(key, settings.stripe_api_base, settings.stripe_timeout_seconds)
    provider = MeteredProvider(provider)
    # Per process and kind of call: a key refused subscriptions (a restricted key) may still refund.
    pause_seconds = settings.provider_auth_pause_seconds, settings.provider_auth_pause_max_seconds
    refunds, subscriptions = ProviderPause("refunds", *pause_seconds), ProviderPause("subscriptions", *pause_seconds)

    def wire(rt: ServiceRuntime) -> None:
        event_handlers.register(rt.consumer)
        rt.run_in_background(RefundExecutor(rt.pool, provider, settings, refunds).run(), "refund_executor")
        rt.run_in_background(SubscriptionCancelExecutor(rt.pool, provider, settings, subscriptions).run(), "cancels")
        extensions = SubscriptionExtensionExecutor(rt.pool, provider, settings, subscriptions)
        rt.run_in_background(extensions.run(), "extensions")
        rt.run_in_background(RefundSync(rt.pool, provider, settings, refunds).run(), "refund_sync")

    run_runtime = runtime.lifespan(wire)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with run_runtime(app):
                if settings.stripe_webhook_secret is None and not settings.stripe_sandbox:
                    # Each webhook is then answered 503: a pending refund finishes only when the sync job polls it.
                    log.warning(
                        "stripe_webhooks_not_configured",
                        hint="set STRIPE_WEBHOOK_SECRET to the signing secret of a Stripe webhook endpoint at"
                        " POST /v1/provider-webhooks/stripe; until then pending refunds wait for the sync job"
                        " (SYNC_PENDING_AFTER_SECONDS)",
                    )
                yield
        finally:  # after the jobs that call the provider have stopped
            if stripe_provider is not None:
                await stripe_provider.close()

    app = service_app(runtime, settings, "Refundflow processor", lifespan=lifespan)
    app.include_router(provider_webhook_router(settings))
    answer_database_busy_as_json(app)
    return app
