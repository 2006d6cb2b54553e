"""SQL for merchant webhooks: endpoints, the events they may carry, deliveries with their schedule, attempts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from refundflow_shared.events import Event, WebhookEndpointConfigured

Row = dict[str, Any]


async def apply_endpoint(conn: asyncpg.Connection, data: WebhookEndpointConfigured) -> None:
    """Take the endpoint's new state unless a newer one is already here; re-enabling clears the failure count."""
    await conn.execute(
        """
        INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, deleted, encrypted_secret, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO UPDATE SET
            url = EXCLUDED.url, event_types = EXCLUDED.event_types, enabled = EXCLUDED.enabled,
            deleted = EXCLUDED.deleted, encrypted_secret = EXCLUDED.encrypted_secret, version = EXCLUDED.version,
            consecutive_failures = CASE WHEN EXCLUDED.enabled THEN 0 ELSE webhook_endpoints.consecutive_failures END,
            disabled_reason = CASE WHEN EXCLUDED.enabled THEN NULL ELSE webhook_endpoints.disabled_reason END,
            updated_at = now()
        WHERE webhook_endpoints.version < EXCLUDED.version AND webhook_endpoints.merchant_id = EXCLUDED.merchant_id
        """,
        data.endpoint_id,
        data.merchant_id,
        data.url,
        data.event_types,
        data.enabled,
        data.deleted,
        data.encrypted_secret,
        data.version,
    )


async def queue_event(conn: asyncpg.Connection, event: Event) -> int:
    """Keep the event as it will be signed, and queue one delivery per subscribed, enabled endpoint."""
    await conn.execute(
        "INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        event.id,
        event.data.merchant_id,
        event.type.value,
        event.time,
        json.dumps(event.to_json(), separators=(",", ":")),
    )
    status = await conn.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id)"
        " SELECT id, $1 FROM webhook_endpoints"
        " WHERE merchant_id = $2 AND enabled AND NOT deleted AND $3 = ANY(event_types)"
        " ON CONFLICT (endpoint_id, event_id) WHERE NOT replay DO NOTHING",
        event.id,
        event.data.merchant_id,
        event.type.value,
    )
    return int(status.split()[-1])


# One endpoint, one delivery in flight: a slow endpoint holds only its own slot. The advisory lock makes
# "not busy" hold across several notifier instances claiming at once.
_CLAIM = """
WITH due AS (
    SELECT DISTINCT ON (d.endpoint_id) d.id
    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled AND NOT e.deleted
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries busy
          WHERE busy.endpoint_id = d.endpoint_id AND busy.status = 'pending' AND busy.locked_until > now()
      )
    ORDER BY d.endpoint_id, d.next_attempt_at, d.id
), picked AS (
    SELECT id FROM due ORDER BY id LIMIT $1
)
UPDATE webhook_deliveries d SET locked_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM picked, webhook_endpoints e, webhook_events ev
WHERE d.id = picked.id AND e.id = d.endpoint_id AND ev.event_id = d.event_id
RETURNING d.id, d.endpoint_id, d.event_id, d.attempts, e.merchant_id, e.url, e.encrypted_secret, ev.payload
"""


async def claim_due(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> list[Row]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notifier.webhook_claim'))")
        return [dict(r) for r in await conn.fetch(_CLAIM, limit, lease_seconds)]


async def record_attempt(
    conn: asyncpg.Connection,
    delivery_id: int,
    attempt: int,
    attempted_at: datetime,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        delivery_id,
        attempt,
        attempted_at,
        status_code,
        latency_ms,
        error,
    )


async def finish_delivery(conn: asyncpg.Connection, delivery_id: int, status: str) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = $2, locked_until = NULL, finished_at = now() WHERE id = $1",
        delivery_id,
        status,
    )


async def retry_delivery(conn: asyncpg.Connection, delivery_id: int, delay_seconds: float) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $2), locked_until = NULL"
        " WHERE id = $1",
        delivery_id,
        delay_seconds,
    )


async def endpoint_succeeded(conn: asyncpg.Connection, endpoint_id: str) -> None:
    await conn.execute(
        "UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures > 0",
        endpoint_id,
    )


async def endpoint_failed_event(conn: asyncpg.Connection, endpoint_id: str) -> int:
    """One more event this endpoint never took; returns how many in a row."""
    failures: int = await conn.fetchval(
        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = $1"
        " RETURNING consecutive_failures",
        endpoint_id,
    )
    return failures


async def disable_endpoint(conn: asyncpg.Connection, endpoint_id: str, reason: str) -> bool:
    """False when it was already disabled (so the team is told once)."""
    status = await conn.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND enabled",
        endpoint_id,
        reason,
    )
    return bool(status == "UPDATE 1")


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: str, merchant_id: str) -> Row | None:
    row = await conn.fetchrow(
        "SELECT id, merchant_id, url, event_types, enabled, deleted, consecutive_failures, disabled_reason"
        " FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
        endpoint_id,
        merchant_id,
    )
    return dict(row) if row else None


async def delivery_log(conn: asyncpg.Connection, endpoint_id: str, limit: int) -> list[Row]:
    """The endpoint's latest deliveries, newest first, each with its attempts."""
    rows = await conn.fetch(
        """
        SELECT d.id, d.event_id, ev.event_type, d.replay, d.status, d.attempts, d.next_attempt_at, d.created_at,
               d.finished_at,
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
    return [{**dict(r), "attempt_log": json.loads(r["attempt_log"])} for r in rows]


async def replay_delivery(conn: asyncpg.Connection, endpoint_id: str, delivery_id: int) -> int | None:
    """A new delivery of the same event (same webhook-id); None when the delivery is not this endpoint's."""
    new_id: int | None = await conn.fetchval(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, replay)"
        " SELECT endpoint_id, event_id, true FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2"
        " RETURNING id",
        delivery_id,
        endpoint_id,
    )
    return new_id


async def replay_since(conn: asyncpg.Connection, endpoint_id: str, since: datetime) -> int:
    """A new delivery of every event the endpoint subscribes to that happened at or after ``since``."""
    status = await conn.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, replay)"
        " SELECT e.id, ev.event_id, true FROM webhook_endpoints e"
        " JOIN webhook_events ev ON ev.merchant_id = e.merchant_id AND ev.event_type = ANY(e.event_types)"
        " WHERE e.id = $1 AND ev.occurred_at >= $2 ORDER BY ev.occurred_at, ev.event_id",
        endpoint_id,
        since,
    )
    return int(status.split()[-1])
