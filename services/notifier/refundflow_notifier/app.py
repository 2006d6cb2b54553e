"""The notifier's wiring: consumer, the message and webhook workers, retention, the internal API and health."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from refundflow_notifier import endpoint_disable_announcements, event_handlers, merchant_settings
from refundflow_notifier.internal_api import internal_router
from refundflow_notifier.message_gauges import observe_due_messages
from refundflow_notifier.message_worker import MessageWorker
from refundflow_notifier.outbound_http import outbound_client
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import SmtpMailer
from refundflow_notifier.webhook_replays import ReplayWalker
from refundflow_notifier.webhook_worker import WebhookWorker
from refundflow_shared.contention_retries import answer_database_busy_as_json
from refundflow_shared.http_service import service_app
from refundflow_shared.retention import RetentionRule
from refundflow_shared.secret_box import SecretBox
from refundflow_shared.service_runtime import ServiceRuntime
from refundflow_shared.wakeup_loop import retry_until_done

MIGRATIONS = Path(__file__).parent / "migrations"


def retention_rules(settings: NotifierSettings) -> list[RetentionRule]:
    """Finished messages (their content is wiped when they finish), the webhook log and finished replays go after
    their time; pending work is never touched. A delivery takes its attempts with it; an event goes once no delivery
    refers to it. A team alert held for settings that never came goes too (logged ``retention_pruned``)."""
    messages = timedelta(days=settings.message_retention_days)
    webhooks = timedelta(days=settings.webhook_retention_days)
    contacts = timedelta(days=settings.customer_contact_retention_days)
    return [
        RetentionRule("messages", "finished_at", messages, "status <> 'pending'"),
        RetentionRule("customer_contacts", "updated_at", contacts),
        RetentionRule("held_team_alerts", "occurred_at", timedelta(days=settings.team_alert_hold_days)),
        RetentionRule("webhook_deliveries", "finished_at", webhooks, "status <> 'pending'"),
        RetentionRule("webhook_replays", "finished_at", webhooks),
        RetentionRule(
            "webhook_events",
            "occurred_at",
            webhooks,
            "NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.event_id)",
        ),
    ]


async def run_workers(runtime: ServiceRuntime, settings: NotifierSettings) -> None:
    """Send queued messages, deliver queued webhooks and walk recorded replays until cancelled."""
    key = settings.webhook_secret_key
    box = SecretBox(key.get_secret_value()) if key else None
    # Before any send, as the job's own work: a database away at start is waited out, never the end of delivery.
    await retry_until_done(lambda: merchant_settings.seal_legacy_slack_urls(runtime.pool, box), name="notifier_workers")
    await retry_until_done(
        lambda: endpoint_disable_announcements.announce_earlier_disables(runtime.pool), name="notifier_workers"
    )
    mailer = SmtpMailer(settings)
    http = outbound_client(
        allow_private=settings.refundflow_allow_private_webhook_urls,
        max_connections=settings.webhook_max_in_flight + settings.message_concurrency,
    )
    try:
        async with http, asyncio.TaskGroup() as workers:
            messages = MessageWorker(runtime.pool, settings, mailer, http, box)
            workers.create_task(messages.dispatcher().run(), name="message_worker")
            webhooks = WebhookWorker(runtime.pool, settings, http, box)
            workers.create_task(webhooks.dispatcher().run(), name="webhook_worker")
            replays = ReplayWalker(runtime.pool, settings)
            workers.create_task(replays.dispatcher().run(), name="webhook_replays")
    finally:
        await mailer.close()


def create_app(settings: NotifierSettings) -> FastAPI:
    runtime = ServiceRuntime("notifier", settings, MIGRATIONS)

    def wire(rt: ServiceRuntime) -> None:
        event_handlers.register(rt.consumer, settings)
        rt.retention_rules.extend(retention_rules(settings))
        rt.scrape_hooks.append(observe_due_messages)
        rt.run_in_background(run_workers(rt, settings), "notifier_workers")

    app = service_app(runtime, settings, "Refundflow notifier", lifespan=runtime.lifespan(wire))
    app.include_router(internal_router(runtime, settings))
    answer_database_busy_as_json(app)
    return app
