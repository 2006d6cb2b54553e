"""SQL for merchant webhooks: endpoints, the events they may carry, deliveries with their schedule, attempts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from refundflow_notifier import merchant_locks
from refundflow_notifier.customer_erasure import erased_or_kept_webhook_payload
from refundflow_notifier.records import ClaimedDelivery, DeliveredAttempt
from refundflow_shared.database import transaction_holding
from refundflow_shared.events import NOT_IN_WEBHOOKS, Event, WebhookEndpointConfigured


async def apply_endpoint(
    conn: asyncpg.Connection, data: WebhookEndpointConfigured, configured_at: datetime
) -> tuple[int, str] | None:
    """Take the endpoint's new state unless a newer one is already here; re-enabling clears the failure count.
    Disabling or deleting it cancels what was still to be delivered (a re-enabled endpoint starts afresh).
    An active endpoint gets the merchant's events it subscribes to that happened since ``configured_at`` (the
    configuration's time) and were handled before it: they travel on other partitions, in no order with it.

    A version that changes only the sealed secret (re-sealed under a new key, or rolled) is no enable: sent before
    intake heard that this notifier disabled the endpoint, it still says enabled. Then the endpoint stays disabled,
    and (version, reason) is returned, for intake to hear the disable again for the version it now has."""
    # A batch queuing the merchant's events commits first, or reads the endpoint after this commits (``queue_events``).
    await merchant_locks.configuring(conn, data.merchant_id)
    if not data.enabled or data.deleted:
        await _stop_queuing_to(conn, data.endpoint_id)
    row = await conn.fetchrow(
        _APPLY_ENDPOINT,
        data.endpoint_id,
        data.merchant_id,
        data.url,
        data.event_types,
        data.enabled,
        data.deleted,
        data.encrypted_secret,
        data.version,
        data.previous_encrypted_secret,
        data.previous_secret_expires_at,
    )
    if row is None:
        return None
    if row["active"]:
        await conn.execute(_QUEUE_EVENTS_SINCE, data.endpoint_id, data.merchant_id, data.event_types, configured_at)
    else:
        await _cancel_pending(conn, data.endpoint_id)
    return (row["version"], row["disabled_reason"]) if row["kept_disabled"] else None


# This notifier disabled the endpoint, and the new version changes nothing but the ciphertext: it stays disabled.
_KEEPS_ITS_DISABLE = """(
    webhook_endpoints.disabled_reason IS NOT NULL AND NOT EXCLUDED.deleted AND webhook_endpoints.url = EXCLUDED.url
    AND webhook_endpoints.event_types = EXCLUDED.event_types
    AND webhook_endpoints.encrypted_secret <> EXCLUDED.encrypted_secret)"""
_ENABLES = f"EXCLUDED.enabled AND NOT {_KEEPS_ITS_DISABLE}"
_APPLY_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, enabled, deleted, encrypted_secret, version,
                               previous_encrypted_secret, previous_secret_expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET
    url = EXCLUDED.url, event_types = EXCLUDED.event_types, enabled = {_ENABLES},
    deleted = EXCLUDED.deleted, encrypted_secret = EXCLUDED.encrypted_secret, version = EXCLUDED.version,
    previous_encrypted_secret = EXCLUDED.previous_encrypted_secret,
    previous_secret_expires_at = EXCLUDED.previous_secret_expires_at,
    consecutive_failures = CASE WHEN {_ENABLES} THEN 0 ELSE webhook_endpoints.consecutive_failures END,
    disabled_reason = CASE WHEN {_ENABLES} THEN NULL ELSE webhook_endpoints.disabled_reason END,
    updated_at = now()
WHERE webhook_endpoints.version < EXCLUDED.version AND webhook_endpoints.merchant_id = EXCLUDED.merchant_id
RETURNING enabled AND NOT deleted AS active, $5 AND NOT enabled AS kept_disabled, disabled_reason, version
"""

# The row is locked by the upsert, as a disable would lock it (``_stop_queuing_to``). An event already queued to the
# endpoint (a redelivered configuration, or one the endpoint had before it was disabled) is not queued again.
_QUEUE_EVENTS_SINCE = """
INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id)
SELECT $1, $2, event_id FROM webhook_events
WHERE merchant_id = $2 AND occurred_at >= $4 AND event_type = ANY($3::text[])
ORDER BY occurred_at, event_id
ON CONFLICT (endpoint_id, event_id) WHERE NOT replay DO NOTHING
"""


async def queue_events(
    conn: asyncpg.Connection,
    events: Sequence[tuple[Event, str | None]],
    max_endpoints: int,
    *,
    also_locking: Sequence[str] = (),
) -> tuple[int, list[uuid.UUID]]:
    """Keep each event as it will be signed (for replays too, and a team alert made again from it) with the trace it
    continues, and queue one delivery per subscribed, enabled endpoint, for at most ``max_endpoints`` of them, in one
    round trip. Returns how many deliveries were queued, and the ids of the events more than ``max_endpoints``
    endpoints subscribed to. ``also_locking``: merchants whose configurations the caller reads next (their locks are
    taken with the events' ones)."""
    merchant_ids = [event.data.merchant_id for event, _ in events] + list(also_locking)
    if merchant_ids:
        # Shares the merchants' locks a configuration takes (``apply_endpoint``): see ``merchant_locks``.
        await merchant_locks.handling_events_of(conn, merchant_ids)
    if not events:
        return 0, []
    row = await conn.fetchrow(
        _QUEUE_EVENTS,
        [event.id for event, _ in events],
        [event.data.merchant_id for event, _ in events],
        [event.type.value for event, _ in events],
        [event.time for event, _ in events],
        [json.dumps(event.webhook_json(), separators=(",", ":")) for event, _ in events],
        [traceparent for _, traceparent in events],
        max_endpoints,
        # Given apart, so that only an erased payment's payload is read as JSON again (to erase it).
        [getattr(event.data, "payment_id", None) for event, _ in events],
    )
    return int(row["queued"]), list(row["over_cap"])


# The events, the endpoints subscribed to each (one more than the cap tells there were too many), and their
# deliveries, in the events' order. Each array is read through a sub-select: given the arrays themselves, the planner
# counts their elements and plans every call anew (0.4 ms of its CPU each here); this way it keeps one plan.
_QUEUE_EVENTS = f"""
WITH given AS (
    SELECT * FROM unnest((SELECT $1::uuid[]), (SELECT $2::text[]), (SELECT $3::text[]), (SELECT $4::timestamptz[]),
                         (SELECT $5::text[]), (SELECT $6::text[]), (SELECT $8::text[]))
        WITH ORDINALITY AS g(event_id, merchant_id, event_type, occurred_at, payload, traceparent, payment_id, position)
), stored AS (
    INSERT INTO webhook_events (event_id, merchant_id, event_type, occurred_at, payload, traceparent)
    SELECT event_id, merchant_id, event_type, occurred_at,
           {erased_or_kept_webhook_payload("payload", "payment_id")}, traceparent
    FROM given ORDER BY position
    ON CONFLICT DO NOTHING
), subscribed AS (
    SELECT g.position, g.event_id, g.merchant_id, e.id, row_number() OVER (PARTITION BY g.position ORDER BY e.id) AS n
    FROM given g CROSS JOIN LATERAL (
        SELECT id FROM webhook_endpoints
        WHERE merchant_id = g.merchant_id AND enabled AND NOT deleted AND g.event_type = ANY(event_types)
        ORDER BY id LIMIT $7 + 1
    ) e
), still_enabled AS (
    -- Read again under the lock a disable waits for (``_stop_queuing_to``): one committed meanwhile is seen, and one
    -- that comes later cancels what this queued once it commits. KEY SHARE, as the deliveries' foreign key takes
    -- anyway: the workers' updates of the failure count do not wait for it. Each endpoint once, in id order.
    SELECT id FROM webhook_endpoints
    WHERE id IN (SELECT id FROM subscribed WHERE n <= $7) AND enabled AND NOT deleted
    ORDER BY id FOR KEY SHARE
), queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, merchant_id, event_id)
    SELECT s.id, s.merchant_id, s.event_id FROM subscribed s JOIN still_enabled USING (id)
    WHERE s.n <= $7 ORDER BY s.position, s.id
    ON CONFLICT (endpoint_id, event_id) WHERE NOT replay DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued,
       ARRAY(SELECT event_id FROM subscribed WHERE n > $7 ORDER BY position) AS over_cap
"""


# What a claim returns, as ``_claimed`` reads it.
_CLAIMED_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, d.attempts, e.merchant_id, e.url, e.encrypted_secret, ev.payload, ev.traceparent,"
    " CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_encrypted_secret END AS previous_encrypted_secret"
)

# Due deliveries, fairly: each endpoint's earliest, live ones before replays (a large replay never holds up an event
# that happens meanwhile), up to its free slots (its cap minus those in flight, leased
# here or by another notifier); then each merchant's first before anyone's second, up to the merchant's free
# slots. So a slow endpoint holds only its own slots, and the cost of a claim does not grow with one endpoint's
# backlog: the endpoints with pending work are found by a loose index scan (one probe each), and each endpoint
# is read only as far as its free slots. The advisory lock makes the caps hold across notifiers.
_CLAIM = f"""
WITH RECURSIVE endpoints_with_work(endpoint_id) AS (
    (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'pending' ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM webhook_deliveries d
            WHERE d.status = 'pending' AND d.endpoint_id > w.endpoint_id ORDER BY d.endpoint_id LIMIT 1)
    FROM endpoints_with_work w WHERE w.endpoint_id IS NOT NULL
), in_flight AS (
    SELECT endpoint_id, merchant_id FROM webhook_deliveries
    WHERE status = 'pending' AND locked_until IS NOT NULL AND locked_until > now()
), candidates AS (
    SELECT c.id, c.replay, c.next_attempt_at, e.merchant_id
    FROM endpoints_with_work w
    JOIN webhook_endpoints e ON e.id = w.endpoint_id AND e.enabled AND NOT e.deleted
    CROSS JOIN LATERAL (
        SELECT d.id, d.replay, d.next_attempt_at FROM webhook_deliveries d
        WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
          AND (d.locked_until IS NULL OR d.locked_until <= now()) AND d.id <> ALL($3::bigint[])
        ORDER BY d.replay, d.next_attempt_at, d.id
        LIMIT greatest(0, $4 - (SELECT count(*) FROM in_flight f WHERE f.endpoint_id = e.id))
    ) c
), ranked AS (
    SELECT id, replay, next_attempt_at,
           row_number() OVER (PARTITION BY merchant_id ORDER BY replay, next_attempt_at, id)
               + (SELECT count(*) FROM in_flight f WHERE f.merchant_id = candidates.merchant_id) AS merchant_slot
    FROM candidates
), picked AS (
    SELECT id FROM ranked WHERE merchant_slot <= $5 ORDER BY merchant_slot, replay, next_attempt_at, id LIMIT $1
)
UPDATE webhook_deliveries d SET locked_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM picked, webhook_endpoints e, webhook_events ev
WHERE d.id = picked.id AND e.id = d.endpoint_id AND ev.event_id = d.event_id
RETURNING {_CLAIMED_COLUMNS}
"""


def _claimed(row: asyncpg.Record) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        attempts=row["attempts"],
        merchant_id=row["merchant_id"],
        url=row["url"],
        encrypted_secret=row["encrypted_secret"],
        previous_encrypted_secret=row["previous_encrypted_secret"],
        payload=_as_sent(row["payload"]),
        traceparent=row["traceparent"],
    )


def _as_sent(kept: str) -> str:
    """The body a kept event is sent with: without what is ``NOT_IN_WEBHOOKS``, which events kept by earlier versions
    (replayed, or still being retried) hold in their data. Only such an event is read and written again, as
    ``queue_events`` writes one (the rest as it was); one kept since is sent as it is, at the cost of a substring
    search."""
    if not any(f'"{name}"' in kept for name in NOT_IN_WEBHOOKS):
        return kept
    event = json.loads(kept)
    if NOT_IN_WEBHOOKS.isdisjoint(event["data"]):
        return kept  # the name was only in a value
    event["data"] = {name: value for name, value in event["data"].items() if name not in NOT_IN_WEBHOOKS}
    return json.dumps(event, separators=(",", ":"))


async def claim_due(
    pool: asyncpg.Pool, limit: int, busy: list[int], *, lease_seconds: float, per_endpoint: int, per_merchant: int
) -> list[ClaimedDelivery]:
    """Lease due deliveries (none of ``busy``): a crashed worker's lease runs out and the delivery is retried."""
    async with pool.acquire() as conn, transaction_holding(conn, "notifier.webhook_claim"):
        rows = await conn.fetch(_CLAIM, limit, lease_seconds, busy, per_endpoint, per_merchant)
        return [_claimed(r) for r in rows]


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


async def record_successes(conn: asyncpg.Connection, delivered: list[DeliveredAttempt]) -> None:
    """Record the attempts, finish their deliveries and reset their endpoints' failure counts: one statement, so
    atomic without a transaction (one round trip for them all on the hot path)."""
    await conn.execute(
        _RECORD_SUCCESSES,
        [d.delivery.id for d in delivered],
        [d.delivery.attempts for d in delivered],
        [d.attempted_at for d in delivered],
        [d.status_code for d in delivered],
        [d.latency_ms for d in delivered],
        [d.delivery.endpoint_id for d in delivered],
        [d.note for d in delivered],
    )


_RECORD_SUCCESSES = """
WITH delivered AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], $7::text[])
        AS d(delivery_id, attempt, attempted_at, status_code, latency_ms, endpoint_id, note)
), attempt AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error)
    SELECT delivery_id, attempt, attempted_at, status_code, latency_ms, note FROM delivered ON CONFLICT DO NOTHING
), delivery AS (
    UPDATE webhook_deliveries SET status = 'succeeded', locked_until = NULL, finished_at = now()
    WHERE id IN (SELECT delivery_id FROM delivered)
)
UPDATE webhook_endpoints SET consecutive_failures = 0
WHERE id IN (SELECT endpoint_id FROM delivered) AND consecutive_failures > 0
"""


# A failed attempt's record holds only for the claim the delivery is still leased to (the attempts it counted): a
# worker whose lease ran out cannot turn the next claim's success into a failure, count it against a healthy
# endpoint, or free that claim's lease. One in flight when its endpoint was disabled (cancelled) still ends failed.
async def finish_delivery(conn: asyncpg.Connection, delivery: ClaimedDelivery, status: str) -> bool:
    """False when the delivery is no longer this claim's: nothing changed."""
    finished = await conn.fetchval(
        "UPDATE webhook_deliveries SET status = $2, locked_until = NULL, finished_at = now()"
        " WHERE id = $1 AND attempts = $3 AND status IN ('pending', 'cancelled') RETURNING id",
        delivery.id,
        status,
        delivery.attempts,
    )
    return finished is not None


async def retry_delivery(conn: asyncpg.Connection, delivery: ClaimedDelivery, delay_seconds: float) -> bool:
    """False when the delivery is no longer this claim's: nothing changed."""
    retried = await conn.fetchval(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $2), locked_until = NULL"
        " WHERE id = $1 AND attempts = $3 AND status = 'pending' RETURNING id",
        delivery.id,
        delay_seconds,
        delivery.attempts,
    )
    return retried is not None


async def endpoint_failed_event(conn: asyncpg.Connection, endpoint_id: str) -> int:
    """One more event this endpoint never took; returns how many in a row."""
    failures: int = await conn.fetchval(
        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = $1"
        " RETURNING consecutive_failures",
        endpoint_id,
    )
    return failures


async def disable_endpoint(conn: asyncpg.Connection, endpoint_id: str, reason: str) -> int | None:
    """Disable it and cancel what it still had to receive; the configuration version it disabled. None when it was
    already disabled (so the team and intake are told once)."""
    await _stop_queuing_to(conn, endpoint_id)
    version: int | None = await conn.fetchval(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()"
        " WHERE id = $1 AND enabled RETURNING version",
        endpoint_id,
        reason,
    )
    if version is None:
        return None
    await _cancel_pending(conn, endpoint_id)
    return version


async def _stop_queuing_to(conn: asyncpg.Connection, endpoint_id: str) -> None:
    """Lock the endpoint against the batches queuing deliveries (FOR UPDATE, their FOR KEY SHARE waits for it): one
    queuing to it now commits first, so the cancel that follows sees what it queued; a later one reads it disabled."""
    await conn.execute("SELECT FROM webhook_endpoints WHERE id = $1 FOR UPDATE", endpoint_id)


async def _cancel_pending(conn: asyncpg.Connection, endpoint_id: str) -> None:
    """A delivery in flight still records how its call went (succeeded or failed), but is never retried."""
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now()"
        " WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint_id,
    )
