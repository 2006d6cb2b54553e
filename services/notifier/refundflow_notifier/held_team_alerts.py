"""Team alerts that wait for the merchant's settings: one its settings route nowhere when its event is handled is
held, and sent once settings naming a channel arrive.

The settings are announced keyed by merchant, the events raising alerts keyed by payment: they travel on other
partitions in no order, so an alert may be handled before the settings saved before it happened. As a webhook
endpoint gets the events it subscribes to since its configuration (``webhook_store.apply_endpoint``), settings get
the alerts held since their time (the event's), once: a sent alert is held no more, and its messages are queued once
per event, kind and recipient. A lock per merchant (``merchant_locks``), taken by its settings and shared by the
batches holding its alerts, makes one of two transactions at once read what the other wrote. An alert whose settings
never come goes ``TEAM_ALERT_HOLD_DAYS`` after it happened (retention, ``app.retention_rules``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
import structlog

from refundflow_notifier import merchant_locks, merchant_settings, message_queue
from refundflow_notifier.notification_rules import MerchantPreferences, TeamAlert
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.tracing import current_traceparent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RaisedAlert:
    """An alert an event raised, when the event happened, and the trace it continues."""

    event_id: uuid.UUID
    merchant_id: str
    occurred_at: datetime
    alert: TeamAlert
    traceparent: str | None = field(default_factory=current_traceparent)


async def route_or_hold(
    conn: asyncpg.Connection, settings: NotifierSettings, alerts: Sequence[RaisedAlert]
) -> list[message_queue.QueuedMessage]:
    """The messages of those of ``alerts`` the merchants' settings route (read under their locks: settings that
    committed since the alerts' handlers read them count), after holding the others in the caller's transaction."""
    if not alerts:
        return []
    merchant_ids = sorted({raised.merchant_id for raised in alerts})
    await merchant_locks.handling_events_of(conn, merchant_ids)
    rows = await conn.fetch(
        f"SELECT merchant_id, {merchant_settings.PREFERENCE_COLUMNS} FROM merchant_settings"
        " WHERE merchant_id = ANY($1::text[])",
        merchant_ids,
    )
    found = {row["merchant_id"]: merchant_settings.preferences_from(settings, row) for row in rows}
    messages, held = [], []
    for raised in alerts:
        prefs = found.get(raised.merchant_id) or merchant_settings.preferences_from(settings, None)
        if prefs.routes_team_alerts:
            messages += _messages(settings, prefs, raised)
        else:
            held.append(raised)
    if held:
        await conn.execute(_HOLD, *zip(*(_row(raised) for raised in held), strict=True))
        for raised in held:
            log.info("team_alert_held", kind=raised.alert.kind, merchant_id=raised.merchant_id)
    return messages


def _row(raised: RaisedAlert) -> tuple[object, ...]:
    alert = raised.alert
    return (
        raised.event_id, alert.kind, raised.merchant_id, alert.title, json.dumps(alert.details), raised.occurred_at,
        raised.traceparent,
    )  # fmt: skip


# A redelivered event's alert is held once.
_HOLD = """
INSERT INTO held_team_alerts (event_id, kind, merchant_id, title, details, occurred_at, traceparent)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::json[], $6::timestamptz[], $7::text[])
ON CONFLICT (event_id, kind) DO NOTHING
"""


async def release(
    conn: asyncpg.Connection, settings: NotifierSettings, merchant_id: str, since: datetime
) -> list[message_queue.QueuedMessage]:
    """The messages of the merchant's alerts held that happened since ``since`` (the time of its settings, just
    saved under its lock), held no more; none while its settings route nowhere (they stay held)."""
    prefs = await merchant_settings.preferences(conn, settings, merchant_id)
    if not prefs.routes_team_alerts:
        return []
    rows = await conn.fetch(
        "DELETE FROM held_team_alerts WHERE merchant_id = $1 AND occurred_at >= $2"
        " RETURNING event_id, kind, title, details, occurred_at, traceparent",
        merchant_id,
        since,
    )
    messages = []
    for row in sorted(rows, key=lambda r: (r["occurred_at"], r["event_id"])):
        alert = TeamAlert(row["kind"], row["title"], json.loads(row["details"]))
        raised = RaisedAlert(row["event_id"], merchant_id, row["occurred_at"], alert, row["traceparent"])
        messages += _messages(settings, prefs, raised)
    if rows:
        log.info("team_alerts_released", merchant_id=merchant_id, alerts=len(rows))
    return messages


def _messages(
    settings: NotifierSettings, prefs: MerchantPreferences, raised: RaisedAlert
) -> list[message_queue.QueuedMessage]:
    messages = message_queue.team_alert(
        settings, prefs, event_id=raised.event_id, merchant_id=raised.merchant_id, alert=raised.alert
    )
    return [replace(message, traceparent=raised.traceparent) for message in messages]
