"""Subscription extensions in PostgreSQL: named writes on the caller's connection."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from refundflow_processor import subscription_cancel_repository as cancels
from refundflow_processor.customer_erasure import to_customer_kept
from refundflow_processor.records import SubscriptionExtension

EXTENSIONS_CHANNEL = "processor_subscription_extensions"
_COLUMNS = (
    "extension_id",
    "payment_id",
    "merchant_id",
    "subscription_id",
    "days",
    "refund_id",
    "until",
    "tries",
    "to_customer",
    "stale_grant_keys",
    "records_grant",
    "from_period_end",
)
_RELEASE = "lease_id = NULL, locked_until = '-infinity', updated_at = now()"


async def request_extension(
    conn: asyncpg.Connection, extension: SubscriptionExtension, *, state: str = "scheduled"
) -> None:
    """Record an extension, due at once unless it waits for its payment (``awaiting_payment``) or was refused
    (``failed``) (the inbox makes a redelivered grant a no-op upstream)."""
    await conn.execute(
        "INSERT INTO subscription_extensions (extension_id, payment_id, merchant_id, subscription_id, days,"
        f" refund_id, state, to_customer) VALUES ($1, $2, $3, $4, $5, $6, $8, {to_customer_kept('$7::jsonb', '$2')})"
        " ON CONFLICT DO NOTHING",
        extension.extension_id,
        extension.payment_id,
        extension.merchant_id,
        extension.subscription_id,
        extension.days,
        extension.refund_id,
        json.dumps(extension.to_customer),
        state,
    )
    if state == "scheduled":
        await conn.execute("SELECT pg_notify($1, '')", EXTENSIONS_CHANNEL)


async def take_awaiting_extensions(conn: asyncpg.Connection, payment_id: str) -> list[SubscriptionExtension]:
    """The extensions waiting for this payment's payment.succeeded, locked."""
    rows = await conn.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM subscription_extensions"
        " WHERE payment_id = $1 AND state = 'awaiting_payment' ORDER BY created_at, extension_id FOR UPDATE",
        payment_id,
    )
    return [_extension(r) for r in rows]


async def take_extensions_past_payment_wait(conn: asyncpg.Connection) -> list[SubscriptionExtension]:
    """The extensions that waited ``PAYMENT_WAIT`` for their payment in vain, locked (a few at a time)."""
    rows = await conn.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM subscription_extensions WHERE state = 'awaiting_payment'"
        f" AND created_at <= now() - {cancels.PAYMENT_WAIT} ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED"
    )
    return [_extension(r) for r in rows]


async def schedule_extension(conn: asyncpg.Connection, extension: SubscriptionExtension) -> None:
    """An extension that waited for its payment is due now."""
    await conn.execute(
        f"UPDATE subscription_extensions SET state = 'scheduled', {_RELEASE} WHERE extension_id = $1",
        extension.extension_id,
    )
    await conn.execute("SELECT pg_notify($1, '')", EXTENSIONS_CHANNEL)


def _extension(row: asyncpg.Record) -> SubscriptionExtension:
    return SubscriptionExtension(
        **{
            **dict(row),
            "to_customer": json.loads(row["to_customer"]),
            "stale_grant_keys": tuple(row["stale_grant_keys"]),
        }
    )


async def claim_due_extensions(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, busy: list[str]
) -> list[SubscriptionExtension]:
    """Due extensions, one per subscription at a time: each starts from the period end the one before left.
    One under way (its new end fixed, or leased) goes on; else the oldest starts. Not the oldest by commit: a grant
    recorded in a transaction that began earlier can appear after a younger one has started, and must wait for it.
    None of ``busy`` (still worked on here, even if their lease ran out). The caller serialises claims."""
    rows = await conn.fetch(
        "UPDATE subscription_extensions e SET locked_until = now() + make_interval(secs => $2),"
        " lease_id = gen_random_uuid()"
        " FROM (SELECT d.extension_id FROM subscription_extensions d"
        "       WHERE d.state = 'scheduled' AND d.next_try_at <= now() AND d.locked_until < now()"
        "         AND (d.until IS NOT NULL OR NOT EXISTS (SELECT 1 FROM subscription_extensions o"
        "             WHERE o.state = 'scheduled' AND o.subscription_id = d.subscription_id"
        "               AND o.extension_id <> d.extension_id AND (o.until IS NOT NULL OR o.locked_until >= now()"
        "                 OR (o.created_at, o.extension_id) < (d.created_at, d.extension_id))))"
        "         AND d.extension_id <> ALL($3::text[])"
        "       ORDER BY d.next_try_at LIMIT $1 FOR UPDATE SKIP LOCKED) due"
        f" WHERE e.extension_id = due.extension_id RETURNING {', '.join('e.' + c for c in _COLUMNS)}, e.lease_id",
        limit,
        lease_seconds,
        busy,
    )
    return [_extension(r) for r in rows]


async def lock_leased_extension(conn: asyncpg.Connection, extension: SubscriptionExtension) -> bool:
    """True if our lease still holds (the row is then locked until the transaction ends)."""
    found = await conn.fetchval(
        "SELECT 1 FROM subscription_extensions WHERE extension_id = $1 AND lease_id = $2 FOR UPDATE",
        extension.extension_id,
        extension.lease_id,
    )
    return found is not None


async def fix_until(
    conn: asyncpg.Connection,
    extension: SubscriptionExtension,
    until: datetime,
    stale_grant_keys: list[str],
    *,
    records_grant: bool,
    from_period_end: datetime,
) -> None:
    """The new period end (from the period end read, ``from_period_end``), whether the change records the grant,
    and the older grants' records to remove, are decided: due again at once, for the change itself."""
    await conn.execute(
        "UPDATE subscription_extensions SET until = $2, stale_grant_keys = $3, records_grant = $4,"
        f" from_period_end = $5, next_try_at = now(), {_RELEASE} WHERE extension_id = $1",
        extension.extension_id,
        until,
        stale_grant_keys,
        records_grant,
        from_period_end,
    )
    await conn.execute("SELECT pg_notify($1, '')", EXTENSIONS_CHANNEL)


async def record_extension_state(
    conn: asyncpg.Connection, extension: SubscriptionExtension, state: str, *, error: str | None = None
) -> None:
    """The extension is done (``succeeded`` or ``failed``): a cancel of the same decision may go now."""
    await conn.execute(
        f"UPDATE subscription_extensions SET state = $2, last_error = coalesce($3, last_error), {_RELEASE}"
        " WHERE extension_id = $1",
        extension.extension_id,
        state,
        error,
    )
    await cancels.wake_cancels_after(conn, extension.refund_id)


async def record_extension_retry(
    conn: asyncpg.Connection, extension: SubscriptionExtension, delay: float, error: str, *, counted: bool = True
) -> None:
    """Due again after ``delay``; ``counted``: the try counts towards the backoff (a pause does not)."""
    await conn.execute(
        "UPDATE subscription_extensions SET tries = tries + $4::int, last_error = $3,"
        f" next_try_at = now() + make_interval(secs => $2), {_RELEASE} WHERE extension_id = $1",
        extension.extension_id,
        delay,
        error,
        1 if counted else 0,
    )
