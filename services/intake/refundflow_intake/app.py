"""Intake's wiring: the HTTP API, its consumers and the backbone, in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from fastapi import Depends, FastAPI, Request, Response

from refundflow_intake import (
    event_handlers,
    ledger,
    notification_settings,
    passwords,
    review_deadlines,
    secret_resealing,
)
from refundflow_intake.api.body_media_types import document_json_bodies, json_bodies_only
from refundflow_intake.api.errors import install_error_handlers, unexpected_error_answer
from refundflow_intake.api.head_requests import HeadAsGet
from refundflow_intake.api.query_parameters import declared_query_only, unknown_query_ignored
from refundflow_intake.api.routes import (
    api_keys,
    balance,
    customers,
    insights,
    merchants,
    payments,
    refund_policy,
    refunds,
    webhook_endpoints,
)
from refundflow_intake.api.routes import portal as portal_api
from refundflow_intake.api.webhook_payloads import document_webhooks
from refundflow_intake.awaited_events import AwaitingEvents
from refundflow_intake.dashboard import wiring as dashboard
from refundflow_intake.portal import wiring as portal
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.public_policy_cache import PublicPolicyCache
from refundflow_intake.refund_gauges import observe_processing_refunds
from refundflow_intake.settings import IntakeSettings, loopback_public_urls
from refundflow_shared.http_metrics import HttpMetrics
from refundflow_shared.http_service import service_app
from refundflow_shared.http_tracing import trace_requests
from refundflow_shared.retention import RetentionRule
from refundflow_shared.secret_box import SecretBox
from refundflow_shared.service_runtime import ServiceRuntime

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
API_DESCRIPTION = (
    "Payments, refund requests and the merchant's decisions. Amounts are integers in the currency's minor units "
    "(4999 with EUR is €49.99); currencies are ISO 4217 codes. Calls take `Authorization: Bearer <token>`: the "
    "merchant's API key; the platform's admin token for platform calls (registering payments, creating merchants, "
    "recovery keys); a customer's portal token under `/v1/portal`. "
    'Errors are `{"error": {"code", "message", "param"?}}`; each endpoint lists the codes it may give.'
)
# Ended sessions, spent links and old rate-limit attempts (every limit's window is an hour or less) go.
DASHBOARD_RETENTION = [
    RetentionRule("dashboard_sessions", "expires_at", timedelta(0)),
    RetentionRule("one_time_links", "expires_at", timedelta(days=7)),
    RetentionRule("rate_limit_attempts", "at", timedelta(days=1)),
]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _wire(
    runtime: ServiceRuntime, settings: IntakeSettings, clock: Callable[[], datetime], links: CustomerLinks
) -> None:
    wait = settings.awaited_event_wait_seconds
    awaiting = AwaitingEvents(runtime.consumer, settings.topic_prefix, timedelta(seconds=wait), clock)
    event_handlers.register(runtime, clock, links, awaiting)
    # Looked at ten times a wait: an event gets its final answer a tenth of its wait late at most.
    runtime.run_in_background(awaiting.watch(runtime.pool, interval=wait / 10), "awaited_events")
    runtime.retention_rules.extend(DASHBOARD_RETENTION)
    runtime.scrape_hooks.append(observe_processing_refunds)
    interval = settings.review_check_interval_seconds
    runtime.run_in_background(review_deadlines.watch(runtime.pool, clock, interval=interval), "review_deadlines")
    fold_interval = settings.balance_fold_interval_seconds
    runtime.run_in_background(ledger.watch(runtime.pool, interval=fold_interval), "balance_totals_fold")


def create_app(settings: IntakeSettings, *, clock: Callable[[], datetime] = _utc_now) -> FastAPI:
    runtime = ServiceRuntime("intake", settings, MIGRATIONS)
    passwords.limit_waiting(settings.password_hashes_waiting_max)
    links = CustomerLinks.from_settings(settings, clock)
    run = runtime.lifespan(lambda rt: _wire(rt, settings, clock, links))
    key = settings.webhook_secret_key

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run(app):
            if loopback := loopback_public_urls(settings):
                log.warning(
                    "public_url_is_loopback",
                    urls=loopback,
                    hint="customers' and invitees' links lead to their own machine: set DASHBOARD_PUBLIC_URL"
                    " (and PORTAL_PUBLIC_URL) to the address they reach intake at",
                )
            box = SecretBox(key.get_secret_value()) if key else None
            # Slack URLs saved in clear before they were sealed: sealed once, before the first request.
            await notification_settings.seal_clear_slack_urls(runtime.pool, box)
            # Portals switched off before switches were announced: the notifier told once.
            await notification_settings.announce_earlier_portal_switches(runtime.pool)
            # What an older key of the ring sealed, sealed again under the first: then the older key can go.
            await secret_resealing.reseal_under_primary_key(runtime.pool, box)
            yield

    app = service_app(
        runtime,
        settings,
        "Refundflow intake",
        lifespan=lifespan,
        description=API_DESCRIPTION,
        answer_unexpected_error=unexpected_error_answer(_dashboard_errors),
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.customer_links = links
    app.state.public_policy_cache = PublicPolicyCache(timedelta(seconds=settings.public_policy_max_age_seconds))
    install_error_handlers(app, pages=_dashboard_errors)
    strict = [Depends(declared_query_only), Depends(json_bodies_only)]  # the API's, not the dashboard's pages
    for module in (merchants, api_keys, payments, refunds, refund_policy, balance, portal_api, insights):
        app.include_router(module.router, dependencies=strict)
    app.include_router(webhook_endpoints.router, dependencies=strict)
    app.include_router(customers.router, dependencies=strict)
    # Storefront pages' widgets add a cache-buster (?_=1700000000) to this public read: ignored there.
    app.include_router(
        refund_policy.public_router, dependencies=[Depends(unknown_query_ignored), Depends(json_bodies_only)]
    )
    document_webhooks(app)
    document_json_bodies(app)
    dashboard.install(app)
    portal.install(app)
    # A path with a trailing slash is not found: Starlette redirected it to an absolute URL built from the Host header.
    app.router.redirect_slashes = False
    app.add_middleware(HeadAsGet)  # inside the metrics and the trace, which see the HEAD
    app.add_middleware(HttpMetrics)
    trace_requests(app)  # added last, so outermost: the span covers the whole request, and every middleware
    return app


async def _dashboard_errors(request: Request, status: int, code: str, message: str) -> Response | None:
    """People read pages: the dashboard's and the customer's errors are pages, the API's are JSON."""
    if dashboard.is_dashboard(request):
        return await dashboard.error_page(request, status, code, message)
    return portal.error_page(request, status)
