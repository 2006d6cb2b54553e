"""Team alerts that wait for the merchant's settings: those its settings route nowhere when their events are handled
are sent once settings naming a channel arrive.

The settings are announced keyed by merchant, the events raising alerts keyed by payment: they travel on other
partitions in no order, so an alert may be handled before the settings saved before it happened. As a webhook
endpoint gets the events it subscribes to since its configuration (``webhook_store.apply_endpoint``), settings that
route alerts where the merchant's did not (none heard of, or none naming a channel) get, once, the alerts that
happened since their time (the event's) and were handled before them:

- a webhook event's alerts (refund.requested, refund.approved, ...) are made again from the event, which every batch
  keeps for the merchant's webhooks anyway (``webhook_events``): nothing is written for them, so the many merchants
  who never save settings pay one read of them per batch, no row;
- the others (the events that only alert the team, and the alert of too many endpoints), rare, are held here.

A lock per merchant (``merchant_locks``), taken by its settings and shared by the batches handling its events, makes
one of two transactions at once read what the other wrote. An alert is sent only by settings that arrive within
``TEAM_ALERT_HOLD_DAYS`` after it happened; a held one is pruned then (retention, ``app.retention_rules``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from refundflow_notifier import merchant_settings, message_queue
from refundflow_notifier.notification_rules import MerchantPreferences, TeamAlert, team_alerts
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.event_decoding import read_event_data
from refundflow_shared.events import EVENT_DATA_TYPES
from refundflow_shared.tracing import current_traceparent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RaisedAlert:
    """An alert an event raised, when the event happened, the trace it continues, and whether the event is kept in
    ``webhook_events`` (its alert is then made again from it, not held)."""

    event_id: uuid.UUID
    merchant_id: str
    occurred_at: datetime
    alert: TeamAlert
    traceparent: str | None = field(default_factory=current_traceparent)
    kept_as_webhook_event: bool = False


async def route_or_hold(
    conn: asyncpg.Connection, settings: NotifierSettings, alerts: Sequence[RaisedAlert]
) -> list[message_queue.QueuedMessage]:
    """The messages of those of ``alerts`` their merchants' settings, read again, route; of the others, those not
    kept as webhook events are held in the caller's transaction. The caller shares the merchants' locks, taken in an
    earlier statement (``merchant_locks``): settings that committed since the alerts' handlers read them count."""
    if not alerts:
        return []
    merchant_ids = sorted({raised.merchant_id for raised in alerts})
    rows = await conn.fetch(
        f"SELECT merchant_id, {merchant_settings.PREFERENCE_COLUMNS} FROM merchant_settings"
        " WHERE merchant_id = ANY($1::text[])",
        merchant_ids,
    )
    found = {row["merchant_id"]: merchant_settings.preferences_from(settings, row) for row in rows}
    messages, held = [], []
    for raised in alerts:
        prefs = found.get(raised.merchant_id)
        if prefs is not None and prefs.routes_team_alerts:
            messages += _messages(settings, prefs, raised)
        elif not raised.kept_as_webhook_event:
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
    """The messages of the merchant's alerts that happened since ``since`` (the time of its settings, just saved
    under its lock, where the settings before routed nowhere), within ``TEAM_ALERT_HOLD_DAYS``: those held, held no
    more, and those of its webhook events, made again. None while its settings route nowhere (they stay held)."""
    prefs = await merchant_settings.preferences(conn, settings, merchant_id)
    if not prefs.routes_team_alerts:
        return []
    since = max(since, datetime.now(UTC) - timedelta(days=settings.team_alert_hold_days))
    held = await conn.fetch(
        "DELETE FROM held_team_alerts WHERE merchant_id = $1 AND occurred_at >= $2"
        " RETURNING event_id, kind, title, details, occurred_at, traceparent",
        merchant_id,
        since,
    )
    kept = await conn.fetch(
        "SELECT event_id, event_type, occurred_at, payload, traceparent FROM webhook_events"
        " WHERE merchant_id = $1 AND occurred_at >= $2",
        merchant_id,
        since,
    )
    raised = [_held_alert(merchant_id, row) for row in held]
    raised += [
        RaisedAlert(row["event_id"], merchant_id, row["occurred_at"], alert, row["traceparent"])
        for row in kept
        for alert in _alerts_of_webhook_event(row["event_type"], row["payload"])
    ]
    messages = []
    for alert in sorted(raised, key=lambda r: (r.occurred_at, r.event_id)):
        messages += _messages(settings, prefs, alert)
    if raised:
        log.info("team_alerts_released", merchant_id=merchant_id, alerts=len(raised))
    return messages


def _held_alert(merchant_id: str, row: asyncpg.Record) -> RaisedAlert:
    alert = TeamAlert(row["kind"], row["title"], json.loads(row["details"]))
    return RaisedAlert(row["event_id"], merchant_id, row["occurred_at"], alert, row["traceparent"])


def _alerts_of_webhook_event(event_type: str, payload: str) -> list[TeamAlert]:
    """The alerts of an event kept as it was signed (``Event.webhook_json``): its data read back by its schema, as the
    consumer read it, and given to the same rules."""
    return team_alerts(read_event_data(EVENT_DATA_TYPES[event_type], json.loads(payload)["data"]))


def _messages(
    settings: NotifierSettings, prefs: MerchantPreferences, raised: RaisedAlert
) -> list[message_queue.QueuedMessage]:
    messages = message_queue.team_alert(
        settings, prefs, event_id=raised.event_id, merchant_id=raised.merchant_id, alert=raised.alert
    )
    return [replace(message, traceparent=raised.traceparent) for message in messages]
