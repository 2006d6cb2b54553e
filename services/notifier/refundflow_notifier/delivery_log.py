"""What merchants see of their webhooks (through intake): the delivery log, and the replay of one delivery.

A replay is a new delivery of an event already sent (same ``webhook-id``); replays of every event since a time are
walked by the replay job (``webhook_replays``).
"""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg

from refundflow_notifier.records import DeliveryAttempt, EndpointState, LoggedDelivery

_ENDPOINT_COLUMNS = "id, merchant_id, url, event_types, enabled, deleted, consecutive_failures, disabled_reason"
_DELIVERY_COLUMNS = (
    "d.id, d.event_id, ev.event_type, d.replay, d.status, d.attempts, d.next_attempt_at, d.created_at, d.finished_at"
)


def _endpoint(row: asyncpg.Record) -> EndpointState:
    return EndpointState(
        id=row["id"],
        merchant_id=row["merchant_id"],
        url=row["url"],
        event_types=row["event_types"],
        enabled=row["enabled"],
        deleted=row["deleted"],
        consecutive_failures=row["consecutive_failures"],
        disabled_reason=row["disabled_reason"],
    )


def _logged_delivery(row: asyncpg.Record) -> LoggedDelivery:
    return LoggedDelivery(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        replay=row["replay"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        attempt_log=[DeliveryAttempt(**attempt) for attempt in json.loads(row["attempt_log"])],
    )


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: str, merchant_id: str) -> EndpointState | None:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
        endpoint_id,
        merchant_id,
    )
    return _endpoint(row) if row else None


async def delivery_log(conn: asyncpg.Connection, endpoint_id: str, limit: int) -> list[LoggedDelivery]:
    """The endpoint's latest deliveries, newest first, each with its attempts."""
    rows = await conn.fetch(
        f"""
        SELECT {_DELIVERY_COLUMNS},
               coalesce(
                   (SELECT json_agg(json_build_object(
                        'attempt', a.attempt, 'attempted_at', a.attempted_at, 'status_code', a.status_code,
                        'latency_ms', a.latency_ms, 'error', a.error) ORDER BY a.attempt)
                    FROM webhook_attempts a WHERE a.delivery_id = d.id),
                   '[]'
               ) AS attempt_log
        FROM webhook_deliveries d JOIN webhook_events ev ON ev.event_id = d.event_id
        WHERE d.endpoint_id = $1 ORDER BY d.id DESC LIMIT $2
        """,
        endpoint_id,
        limit,
    )
    return [_logged_delivery(r) for r in rows]


class ReplayWindowExceeded(Exception):
    """The delivery's event happened further back than a replay reaches."""

    code = "replay_window_exceeded"


async def replay_delivery(
    conn: asyncpg.Connection, endpoint_id: str, delivery_id: int, *, reach: timedelta
) -> int | None:
    """Deliveries scheduled (0 while the endpoint is disabled); None when the delivery is not this endpoint's.
    Raises ``ReplayWindowExceeded`` when its event happened more than ``reach`` ago, as a replay since a time reaches
    no further: each replay is a new delivery, which would keep the event (and what it says of a customer) from
    retention for another period, and send it to whatever URL the endpoint has now."""
    assert conn.is_in_transaction(), "the endpoint's lock must be held until the delivery is queued"
    # Under the lock a disable waits for (webhook_store._stop_queuing_to): one committed meanwhile is seen, and one
    # that comes later cancels this delivery with the rest. KEY SHARE, as the delivery's foreign key takes anyway.
    row = await conn.fetchrow(
        "SELECT d.event_id, e.merchant_id, e.enabled AND NOT e.deleted AS active,"
        " ev.occurred_at >= now() - $3::interval AS within_reach FROM webhook_deliveries d"
        " JOIN webhook_endpoints e ON e.id = d.endpoint_id JOIN webhook_events ev ON ev.event_id = d.event_id"
        " WHERE d.id = $1 AND d.endpoint_id = $2 FOR KEY SHARE OF e",
        delivery_id,
        endpoint_id,
        reach,
    )
    if row is None:
        return None
    if not row["within_reach"]:
        days = f"{reach / timedelta(days=1):g}"
        raise ReplayWindowExceeded(
            f"delivery {delivery_id}'s event is older than {days} days: replays reach back {days} days at most"
        )
    if not row["active"]:
        return 0
    await conn.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id, replay) VALUES ($1, $2, $3, true)",
        endpoint_id,
        row["merchant_id"],
        row["event_id"],
    )
    return 1
