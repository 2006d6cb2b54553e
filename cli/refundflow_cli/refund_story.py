"""`refundflow refund REFUND_ID`: one refund across the three services, in time order.

Read straight from each service's schema: intake's refund, timeline and approvals; the events each service
published about it and when each consumer handled them (outbox and inbox); the processor's attempts (idempotency
keys, the provider's answers, errors); the notifier's messages and webhook deliveries. A schema that does not
exist yet (its service never started) is reported as missing, not as an error. The trace ids are those each step
ran in (timeline entries, events, attempts, messages, webhook events): one, unless a step started a new trace.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from refundflow_cli.connections import database
from refundflow_cli.outcomes import ExitCode, NotFound
from refundflow_cli.output import Output, when
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import SERVICES
from refundflow_shared.money import format_amount
from refundflow_shared.tracing import trace_id_of

Row = dict[str, Any]

_REFUND = """
SELECT r.id, r.status, r.amount, r.currency, r.reason, r.reason_details, r.channel, r.flags, r.requested_amount,
       r.subscription_action, r.extend_days, r.failure_reason, r.decision_note, r.created_at, r.updated_at,
       r.decided_at, r.review_due_at, r.review_overdue_at, r.merchant_id, r.payment_id,
       p.provider_payment_id, p.amount AS payment_amount, p.refunded_amount AS payment_refunded_amount,
       p.product_id, p.product_kind
FROM intake.refunds r JOIN intake.payments p ON p.id = r.payment_id WHERE r.id = $1
"""
_TIMELINE = """
SELECT status, coalesce(action, status) AS action, actor, note, at, traceparent FROM intake.refund_timeline
WHERE refund_id = $1 ORDER BY id
"""
_APPROVALS = "SELECT actor, amount, approved_at FROM intake.refund_approvals WHERE refund_id = $1 ORDER BY approved_at"
_PROCESSOR_REFUND = """
SELECT status, payment_id, merchant_id, amount, currency, provider_payment_id, provider_calls, provider_refund_id,
       failure_reason, failure_message, outcome_unknown_alerted_at, created_at, updated_at
FROM processor.refunds WHERE refund_id = $1
"""
_ATTEMPTS = """
SELECT attempt, idempotency_key, state, tries, server_errors, next_try_at, last_error, provider_refund_id,
       created_at, updated_at, traceparent
FROM processor.refund_attempts WHERE refund_id = $1 ORDER BY attempt
"""
_CANCELS = """
SELECT cancel_id, subscription_id, at_period_end, state, tries, last_error, created_at, updated_at
FROM processor.subscription_cancels WHERE refund_id = $1 ORDER BY created_at
"""
_MESSAGES = """
SELECT event_id, channel, kind, recipient, status, attempts, error, created_at, sent_at, finished_at, traceparent,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS due_at
FROM notifier.messages WHERE refund_id = $1 ORDER BY id
"""
_DELIVERIES = """
SELECT d.id, d.endpoint_id, d.event_id, ev.event_type, d.replay, d.status, d.attempts, d.created_at, d.finished_at,
       last.status_code AS last_status_code, last.error AS last_error, ev.traceparent
FROM notifier.webhook_events ev
JOIN notifier.webhook_deliveries d ON d.event_id = ev.event_id
LEFT JOIN LATERAL (
    SELECT status_code, error FROM notifier.webhook_attempts a WHERE a.delivery_id = d.id ORDER BY attempt DESC LIMIT 1
) last ON true
WHERE ev.merchant_id = $2 AND (ev.payload::jsonb -> 'data' ->> 'refund_id') = $1
ORDER BY d.id
"""


async def show_refund(settings: CliSettings, out: Output, *, refund_id: str) -> ExitCode:
    missing: list[str] = []
    async with database(settings) as conn:

        async def rows(query: str, *args: Any, schema: str) -> list[Row]:
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                if schema not in missing:
                    missing.append(schema)
                return []

        refund = next(iter(await rows(_REFUND, refund_id, schema="intake")), None)
        processor_refund = next(iter(await rows(_PROCESSOR_REFUND, refund_id, schema="processor")), None)
        if refund is None and processor_refund is None:
            raise NotFound(f"no refund {refund_id} in intake or the processor")
        owner = refund or processor_refund
        assert owner is not None
        merchant_id, payment_id = owner["merchant_id"], owner["payment_id"]
        timeline = await rows(_TIMELINE, refund_id, schema="intake")
        approvals = await rows(_APPROVALS, refund_id, schema="intake")
        attempts = await rows(_ATTEMPTS, refund_id, schema="processor")
        cancels = await rows(_CANCELS, refund_id, schema="processor")
        messages = await rows(_MESSAGES, refund_id, schema="notifier")
        deliveries = await rows(_DELIVERIES, refund_id, merchant_id, schema="notifier")
        events = await _events(conn, refund_id, payment_id, missing)
    story = _story(refund, timeline, approvals, events, attempts, cancels, messages, deliveries)
    report = {
        "refund_id": refund_id,
        "trace_ids": _trace_ids(timeline, events, attempts, messages, deliveries),
        "intake": {"refund": refund, "timeline": timeline, "approvals": approvals},
        "processor": {"refund": processor_refund, "attempts": attempts, "subscription_cancels": cancels},
        "notifier": {"messages": messages, "webhook_deliveries": deliveries},
        "events": events,
        "story": story,
        "missing_schemas": missing,
    }
    if out.json_mode:
        out.document(report)
    else:
        _print(out, report)
    return ExitCode.OK


async def _events(conn: asyncpg.Connection, refund_id: str, payment_id: str, missing: list[str]) -> list[Row]:
    """The events each service published about the refund, and when each consumer handled them."""
    events: list[Row] = []
    for schema in SERVICES:
        if schema in missing:
            continue
        try:
            # The payment's events (the Kafka key); a payment has few, so reading their payloads is cheap.
            staged = await conn.fetch(
                f"SELECT event_id, event_type, payload, created_at, sent_at, parked_at,"
                f" headers ->> 'ce_traceparent' AS traceparent FROM {schema}.outbox"
                " WHERE partition_key = $1 ORDER BY id",
                payment_id,
            )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            continue
        for row in staged:
            if _refund_of(bytes(row["payload"])) == refund_id:
                event = {k: row[k] for k in ("event_id", "event_type", "created_at", "sent_at", "parked_at")}
                event["trace_id"] = trace_id_of(row["traceparent"])
                events.append(event | {"published_by": schema, "handled_by": {}})
    ids = [e["event_id"] for e in events]
    for consumer in SERVICES:
        try:
            handled = await conn.fetch(
                f"SELECT event_id, handled_at FROM {consumer}.inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
                consumer,
                ids,
            )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            continue
        at = {r["event_id"]: r["handled_at"] for r in handled}
        for event in events:
            if event["event_id"] in at:
                event["handled_by"][consumer] = at[event["event_id"]]
    return sorted(events, key=lambda e: e["created_at"])


def _trace_ids(*steps: list[Row]) -> list[str]:
    """The trace ids the refund's steps ran in, first seen first (each row's stored traceparent becomes its id)."""
    seen: dict[str, None] = {}
    for rows in steps:
        for row in rows:
            if "traceparent" in row:
                row["trace_id"] = trace_id_of(row.pop("traceparent"))
            if row["trace_id"] is not None:
                seen.setdefault(row["trace_id"], None)
    return list(seen)


def _refund_of(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = data.get("refund_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _story(
    refund: Row | None,
    timeline: list[Row],
    approvals: list[Row],
    events: list[Row],
    attempts: list[Row],
    cancels: list[Row],
    messages: list[Row],
    deliveries: list[Row],
) -> list[Row]:
    """Every step of the refund as (at, service, what), in time order."""
    steps: list[tuple[datetime | None, str, str]] = []
    for entry in timeline:
        note = f" ({entry['note']})" if entry["note"] else ""
        change = entry["status"] if entry["action"] == entry["status"] else f"{entry['action']}: {entry['status']}"
        steps.append((entry["at"], "intake", f"{change} by {entry['actor']}{note}"))
    for approval in approvals:  # intake's refund is there: its approvals reference it
        amount = format_amount(approval["amount"], refund["currency"]) if refund else approval["amount"]
        steps.append((approval["approved_at"], "intake", f"approved {amount} by {approval['actor']}"))
    for event in events:
        steps.append((event["created_at"], event["published_by"], f"staged {event['event_type']} {event['event_id']}"))
        if event["sent_at"]:
            steps.append((event["sent_at"], event["published_by"], f"published {event['event_type']}"))
        if event["parked_at"]:
            steps.append((event["parked_at"], event["published_by"], f"PARKED {event['event_type']} (broker refused)"))
        for consumer, at in event["handled_by"].items():
            steps.append((at, consumer, f"handled {event['event_type']}"))
    for attempt in attempts:
        key = attempt["idempotency_key"]
        steps.append((attempt["created_at"], "processor", f"attempt {attempt['attempt']} with key {key}"))
        answer = f"attempt {attempt['attempt']} {attempt['state']} after {attempt['tries']} call(s)"
        if attempt["provider_refund_id"]:
            answer += f", provider refund {attempt['provider_refund_id']}"
        if attempt["last_error"]:
            answer += f", last error: {attempt['last_error']}"
        steps.append((attempt["updated_at"], "processor", answer))
    for cancel in cancels:
        steps.append((cancel["updated_at"], "processor", f"subscription cancel {cancel['state']}"))
    for message in messages:
        to = message["recipient"] if message["channel"] == "email" else message["channel"]
        steps.append((message["created_at"], "notifier", f"queued {message['channel']} {message['kind']} to {to}"))
        if message["status"] != "pending":
            done = message["sent_at"] or message["finished_at"]
            error = f": {message['error']}" if message["error"] else ""
            steps.append((done, "notifier", f"{message['channel']} {message['kind']} {message['status']}{error}"))
    for delivery in deliveries:
        what = f"webhook {delivery['event_type']} to {delivery['endpoint_id']}"
        steps.append(
            (delivery["created_at"], "notifier", f"queued {what}" + (" (replay)" if delivery["replay"] else ""))
        )
        if delivery["finished_at"]:
            code = delivery["last_status_code"]
            steps.append((delivery["finished_at"], "notifier", f"{what} {delivery['status']} (HTTP {code or '-'})"))
    if refund is not None and not timeline:
        steps.append((refund["created_at"], "intake", f"requested, now {refund['status']}"))
    ordered = sorted((s for s in steps if s[0] is not None), key=lambda s: s[0])  # type: ignore[arg-type,return-value]
    return [{"at": at, "service": service, "what": what} for at, service, what in ordered]


def _print(out: Output, report: dict[str, Any]) -> None:
    refund = report["intake"]["refund"]
    if refund is not None:
        amount = format_amount(refund["amount"], refund["currency"])
        out.line(
            f"Refund {refund['id']}: {refund['status']}, {amount} of payment "
            f"{refund['payment_id']} ({refund['provider_payment_id']}), merchant {refund['merchant_id']}, "
            f"reason {refund['reason']}, via {refund['channel']}"
            + (f", failure {refund['failure_reason']}" if refund["failure_reason"] else ""),
            style="bold",
        )
    processor = report["processor"]["refund"]
    if processor is not None:
        out.line(
            f"Processor: {processor['status']}"
            + (f", provider refund {processor['provider_refund_id']}" if processor["provider_refund_id"] else "")
            + (
                f", failure {processor['failure_reason']}: {processor['failure_message']}"
                if processor["failure_reason"]
                else ""
            )
        )
    if report["trace_ids"]:
        out.line(f"Trace ids: {', '.join(report['trace_ids'])}")
    for schema in report["missing_schemas"]:
        out.note(f"{schema}: no schema yet (the service never started here)")
    out.table(
        "Story",
        ["at", "service", "what"],
        [[when(s["at"], "milliseconds"), s["service"], s["what"]] for s in report["story"]],
    )
    out.table(
        "Processor attempts",
        ["#", "idempotency key", "state", "tries", "5xx", "provider refund", "last error", "updated"],
        [
            [
                a["attempt"],
                a["idempotency_key"],
                a["state"],
                a["tries"],
                a["server_errors"],
                a["provider_refund_id"],
                a["last_error"],
                when(a["updated_at"]),
            ]
            for a in report["processor"]["attempts"]
        ],
    )
    out.table(
        "Notifier messages",
        ["channel", "kind", "to", "status", "attempts", "error", "sent", "due"],
        [
            [
                m["channel"],
                m["kind"],
                m["recipient"],
                m["status"],
                m["attempts"],
                m["error"],
                when(m["sent_at"] or m["finished_at"]),
                when(m["due_at"]),  # still to send: when it is next tried (a retry, or waiting for the one before)
            ]
            for m in report["notifier"]["messages"]
        ],
    )
    out.table(
        "Webhook deliveries",
        ["id", "endpoint", "event", "status", "attempts", "last HTTP status", "last error", "finished"],
        [
            [
                d["id"],
                d["endpoint_id"],
                d["event_type"],
                d["status"],
                d["attempts"],
                d["last_status_code"],
                d["last_error"],
                when(d["finished_at"]),
            ]
            for d in report["notifier"]["webhook_deliveries"]
        ],
    )
