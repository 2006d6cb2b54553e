"""Subscription cancel requests in PostgreSQL: named writes on the caller's connection."""

from __future__ import annotations

import json

import asyncpg

from refundflow_processor.customer_erasure import to_customer_kept
from refundflow_processor.records import SubscriptionCancel

CANCELS_CHANNEL = "processor_subscription_cancels"
_COLUMNS = (
    "cancel_id, payment_id, merchant_id, subscription_id, at_period_end, refund_id, tries, lease_id, to_customer,"
    " after_extension"
)
_RELEASE = "lease_id = NULL, locked_until = '-infinity', updated_at = now()"
# How long a cancel waits for its decision's extension (done in seconds when all is well). Past it (the grant was
# dead-lettered, or the provider keeps failing the change) it goes on: a customer who must stop being billed matters
# more than the date they are told, and a renewal may fall within a longer wait.
EXTENSION_WAIT = "interval '10 minutes'"
# How long a cancel or an extension naming a payment not heard of waits for its payment.succeeded (another topic's
# event: seconds behind when all is well) before it is refused.
PAYMENT_WAIT = "interval '10 minutes'"


def _cancel(row: asyncpg.Record) -> SubscriptionCancel:
    return SubscriptionCancel(**{**dict(row), "to_customer": json.loads(row["to_customer"])})


async def request_cancel(conn: asyncpg.Connection, cancel: SubscriptionCancel, *, state: str = "scheduled") -> None:
    """Record a cancel request, due at once unless it waits for its payment (``awaiting_payment``) or was refused
    (``failed``) (the inbox makes a redelivered request a no-op upstream)."""
    await conn.execute(
        "INSERT INTO subscription_cancels (cancel_id, payment_id, merchant_id, subscription_id, at_period_end,"
        " refund_id, state, to_customer, after_extension)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $9, {to_customer_kept('$7::jsonb', '$2')}, $8)"
        " ON CONFLICT DO NOTHING",
        cancel.cancel_id,
        cancel.payment_id,
        cancel.merchant_id,
        cancel.subscription_id,
        cancel.at_period_end,
        cancel.refund_id,
        json.dumps(cancel.to_customer),
        cancel.after_extension,
        state,
    )
    if state == "scheduled":
        await conn.execute("SELECT pg_notify($1, '')", CANCELS_CHANNEL)


async def take_awaiting_cancels(conn: asyncpg.Connection, payment_id: str) -> list[SubscriptionCancel]:
    """The cancels waiting for this payment's payment.succeeded, locked."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM subscription_cancels WHERE payment_id = $1 AND state = 'awaiting_payment'"
        " ORDER BY created_at, cancel_id FOR UPDATE",
        payment_id,
    )
    return [_cancel(r) for r in rows]


async def take_cancels_past_payment_wait(conn: asyncpg.Connection) -> list[SubscriptionCancel]:
    """The cancels that waited ``PAYMENT_WAIT`` for their payment in vain, locked (a few at a time)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM subscription_cancels WHERE state = 'awaiting_payment'"
        f" AND created_at <= now() - {PAYMENT_WAIT} ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED"
    )
    return [_cancel(r) for r in rows]


async def claim_due_cancels(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, busy: list[str]
) -> list[SubscriptionCancel]:
    """Lease up to ``limit`` due cancels, none of ``busy`` (still worked on here, even if their lease ran out).
    One ``after_extension`` is due once its decision's extension is done (succeeded or failed), or after
    ``EXTENSION_WAIT``: the grant is another topic's event, so it may not even be recorded yet."""
    rows = await conn.fetch(
        "UPDATE subscription_cancels c SET locked_until = now() + make_interval(secs => $2),"
        " lease_id = gen_random_uuid()"
        " FROM (SELECT d.cancel_id FROM subscription_cancels d"
        "       WHERE d.state = 'scheduled' AND d.next_try_at <= now() AND d.locked_until < now()"
        "         AND d.cancel_id <> ALL($3::text[])"
        f"        AND (NOT d.after_extension OR d.created_at <= now() - {EXTENSION_WAIT}"
        "           OR EXISTS (SELECT 1 FROM subscription_extensions e"
        "               WHERE e.refund_id = d.refund_id AND e.state <> 'scheduled'))"
        "       ORDER BY d.next_try_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
        f" WHERE c.cancel_id = due.cancel_id RETURNING {', '.join('c.' + c for c in _COLUMNS.split(', '))}",
        limit,
        lease_seconds,
        busy,
    )
    return [_cancel(r) for r in rows]


async def wake_cancels_after(conn: asyncpg.Connection, refund_id: str | None) -> None:
    """The extension ``refund_id``'s decision granted is done: wake the dispatcher if a cancel waits for it."""
    await conn.execute(
        "SELECT pg_notify($1, '') WHERE EXISTS (SELECT 1 FROM subscription_cancels"
        " WHERE refund_id = $2 AND after_extension AND state = 'scheduled')",
        CANCELS_CHANNEL,
        refund_id,
    )


async def lock_leased_cancel(conn: asyncpg.Connection, cancel: SubscriptionCancel) -> bool:
    """True if our lease on the request still holds (it is then locked until the transaction ends)."""
    found = await conn.fetchval(
        "SELECT 1 FROM subscription_cancels WHERE cancel_id = $1 AND lease_id = $2 FOR UPDATE",
        cancel.cancel_id,
        cancel.lease_id,
    )
    return found is not None


async def schedule_cancel(conn: asyncpg.Connection, cancel: SubscriptionCancel) -> None:
    """A cancel that waited for its payment is due now."""
    await record_cancel_state(conn, cancel, "scheduled")
    await conn.execute("SELECT pg_notify($1, '')", CANCELS_CHANNEL)


async def record_cancel_state(
    conn: asyncpg.Connection, cancel: SubscriptionCancel, state: str, *, error: str | None = None
) -> None:
    await conn.execute(
        f"UPDATE subscription_cancels SET state = $2, last_error = coalesce($3, last_error), {_RELEASE}"
        " WHERE cancel_id = $1",
        cancel.cancel_id,
        state,
        error,
    )


async def record_cancel_retry(conn: asyncpg.Connection, cancel: SubscriptionCancel, delay: float, error: str) -> None:
    await conn.execute(
        "UPDATE subscription_cancels SET tries = tries + 1, last_error = $3,"
        f" next_try_at = now() + make_interval(secs => $2), {_RELEASE} WHERE cancel_id = $1",
        cancel.cancel_id,
        delay,
        error,
    )


async def record_cancel_paused(conn: asyncpg.Connection, cancel: SubscriptionCancel, delay: float, error: str) -> None:
    await conn.execute(
        f"UPDATE subscription_cancels SET last_error = $3, next_try_at = now() + make_interval(secs => $2), {_RELEASE}"
        " WHERE cancel_id = $1",
        cancel.cancel_id,
        delay,
        error,
    )
