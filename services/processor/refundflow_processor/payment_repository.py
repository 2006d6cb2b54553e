"""Payments, the sync job's bookkeeping and refunds made elsewhere, in PostgreSQL: named writes, caller's conn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

from refundflow_processor.payment_provider import ProviderRefund
from refundflow_processor.records import ExternalRefund, PaidSubscription, Payment

_PAYMENT_COLUMNS = "payment_id, merchant_id, provider_payment_id, amount, currency"
_EXTERNAL_COLUMNS = "x.provider_refund_id, x.payment_id, x.amount, x.currency, x.status, x.attributed"


class PaymentClaim(StrEnum):
    NEW = "new"
    KNOWN = "known"  # the same payment again (a redelivery, or payment.succeeded after an approval)
    CONFLICT = "conflict"  # the payment id, or the provider payment, is already another payment's


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        merchant_id=row["merchant_id"],
        provider_payment_id=row["provider_payment_id"],
        amount=row["amount"],
        currency=row["currency"],
    )


def _external(row: asyncpg.Record) -> ExternalRefund:
    return ExternalRefund(
        provider_refund_id=row["provider_refund_id"],
        payment_id=row["payment_id"],
        amount=row["amount"],
        currency=row["currency"] or "",
        status=row["status"],
        attributed=row["attributed"],
    )


async def lock_payment(conn: asyncpg.Connection, payment_id: str) -> Payment | None:
    """The payment, locked: its refunds are capped under this lock."""
    return (await lock_payments(conn, [payment_id])).get(payment_id)


async def lock_payments(conn: asyncpg.Connection, payment_ids: list[str]) -> dict[str, Payment]:
    """These payments (those known), locked at once in payment id order: the order in which every transaction that
    locks several takes them, so that no two of them wait for each other. The order is by code point, as Python
    sorts them (the executor's group of outcomes), whatever the database's collation."""
    rows = await conn.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = ANY($1::text[])"
        ' ORDER BY payment_id COLLATE "C" FOR UPDATE',
        payment_ids,
    )
    return {row["payment_id"]: _payment(row) for row in rows}


async def remember_payment(conn: asyncpg.Connection, payment: Payment, *, trusted: bool) -> PaymentClaim:
    """Learn a payment. ``trusted``: from payment.succeeded, whose amount and currency replace what an earlier
    approval said. A provider payment belongs to one payment only: a second claim on it is a CONFLICT."""
    # Callers learn payments they do not know yet: the insert first, one round trip (no savepoint) when it is new.
    inserted = await conn.fetchval(
        "INSERT INTO payments (payment_id, merchant_id, provider_payment_id, amount, currency, trusted)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
        payment.payment_id,
        payment.merchant_id,
        payment.provider_payment_id,
        payment.amount,
        payment.currency,
        trusted,
    )
    if inserted:
        return PaymentClaim.NEW
    known = await lock_payment(conn, payment.payment_id)
    if known is None or known.provider_payment_id != payment.provider_payment_id:
        return PaymentClaim.CONFLICT  # its provider payment is another payment's, or it names another one
    if trusted:
        await conn.execute(
            "UPDATE payments SET amount = $2, currency = $3, trusted = true WHERE payment_id = $1 AND NOT trusted",
            payment.payment_id,
            payment.amount,
            payment.currency,
        )
    return PaymentClaim.KNOWN


async def merchants_payment_of(conn: asyncpg.Connection, payment: Payment) -> Payment | None:
    """The payment holding ``payment``'s provider payment under another payment id, if it is the same merchant's
    (billing's id for a payment registered through intake names it so), or None."""
    row = await conn.fetchrow(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE provider_payment_id = $1 AND merchant_id = $2"
        " AND payment_id <> $3",
        payment.provider_payment_id,
        payment.merchant_id,
        payment.payment_id,
    )
    return None if row is None else _payment(row)


async def record_alias(conn: asyncpg.Connection, payment: Payment) -> None:
    """Remember ``payment``'s id as another of its provider payment, which its merchant's ``merchants_payment_of``
    holds: billing's disputes name the payment so."""
    await conn.execute(
        "INSERT INTO payment_aliases (payment_id, merchant_id, provider_payment_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (payment_id, merchant_id) DO NOTHING",
        payment.payment_id,
        payment.merchant_id,
        payment.provider_payment_id,
    )


async def remember_subscription(conn: asyncpg.Connection, payment_id: str, paid: PaidSubscription) -> PaidSubscription:
    """What payment.succeeded said of the payment's subscription; the first word holds (as the payment's), and is
    returned."""
    row = await conn.fetchrow(
        "WITH new AS (INSERT INTO payment_subscriptions (payment_id, merchant_id, subscription_id)"
        "   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING merchant_id, subscription_id, said)"
        " SELECT * FROM new UNION ALL SELECT merchant_id, subscription_id, said FROM payment_subscriptions"
        " WHERE payment_id = $1 AND NOT EXISTS (SELECT FROM new)",
        payment_id,
        paid.merchant_id,
        paid.subscription_id,
    )
    return paid if row is None else PaidSubscription(row["merchant_id"], row["subscription_id"], said=row["said"])


async def paid_subscription(conn: asyncpg.Connection, payment_id: str) -> PaidSubscription | None:
    """What payment.succeeded said of the payment's subscription; None before it came."""
    row = await conn.fetchrow(
        "SELECT merchant_id, subscription_id, said FROM payment_subscriptions WHERE payment_id = $1", payment_id
    )
    return None if row is None else PaidSubscription(row["merchant_id"], row["subscription_id"], said=row["said"])


async def record_dispute(conn: asyncpg.Connection, payment_id: str, merchant_id: str, dispute_id: str | None) -> None:
    """A chargeback of the payment named (by our id, the provider's or billing's alias), for the merchant named; the
    first one counts."""
    await conn.execute(
        "INSERT INTO payment_disputes (payment_id, merchant_id, dispute_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (payment_id, merchant_id) DO NOTHING",
        payment_id,
        merchant_id,
        dispute_id,
    )


async def payments_with_provider_id(conn: asyncpg.Connection, provider_payment_id: str) -> list[Payment]:
    rows = await conn.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE provider_payment_id = $1", provider_payment_id
    )
    return [_payment(r) for r in rows]


@dataclass(frozen=True)
class SyncLease:
    """A payment leased for one scan; ``until`` (the lease's end) tells our lease from a later one; ``failures``:
    its scans that failed in a row before this one; ``known_since``: when the processor learned of the payment;
    ``claimed_at``: when the scan began."""

    payment: Payment
    until: datetime
    failures: int
    known_since: datetime
    claimed_at: datetime


async def claim_payment_to_sync(conn: asyncpg.Connection, lease_seconds: float, skip: list[str]) -> SyncLease | None:
    """Lease the payment whose scan is due the longest (none of ``skip``, scanned in this run), for one scan: a
    lease per payment as it is scanned, so that none waits in a run's tail while its lease runs out."""
    row = await conn.fetchrow(
        "UPDATE payments p SET sync_locked_until = now() + make_interval(secs => $1)"
        " FROM (SELECT payment_id FROM payments WHERE next_sync_at <= now() AND sync_retry_at <= now()"
        "       AND sync_locked_until < now() AND payment_id <> ALL($2::text[])"
        "       ORDER BY next_sync_at LIMIT 1 FOR UPDATE SKIP LOCKED) due"
        " WHERE p.payment_id = due.payment_id"
        " RETURNING p.payment_id, p.merchant_id, p.provider_payment_id, p.amount, p.currency, p.sync_locked_until,"
        " p.sync_failures, p.created_at, now() AS claimed_at",
        lease_seconds,
        skip,
    )
    if row is None:
        return None
    return SyncLease(
        _payment(row), row["sync_locked_until"], row["sync_failures"], row["created_at"], row["claimed_at"]
    )


async def lock_sync_lease(conn: asyncpg.Connection, lease: SyncLease) -> bool:
    """True if our lease on the payment's scan still holds (the payment is then locked until the transaction
    ends): else another instance took the scan over, and records it."""
    found = await conn.fetchval(
        "SELECT 1 FROM payments WHERE payment_id = $1 AND sync_locked_until = $2 FOR UPDATE",
        lease.payment.payment_id,
        lease.until,
    )
    return found is not None


async def record_payment_synced(conn: asyncpg.Connection, lease: SyncLease, next_sync_at: datetime | None) -> None:
    """The scan is done; the next is due at ``next_sync_at`` (None: never), or sooner if something asked for a scan
    since it was claimed (``scan_payment_soon``)."""
    await conn.execute(
        "UPDATE payments SET last_synced_at = now(), sync_locked_until = '-infinity', sync_failures = 0,"
        " sync_error = NULL, sync_retry_at = '-infinity',"
        " next_sync_at = CASE WHEN next_sync_at > $4 THEN least(next_sync_at, $3) ELSE $3 END"
        " WHERE payment_id = $1 AND sync_locked_until = $2",
        lease.payment.payment_id,
        lease.until,
        next_sync_at,
        lease.claimed_at,
    )


async def payments_to_reschedule(conn: asyncpg.Connection, limit: int) -> list[tuple[str, datetime, datetime]]:
    """Payments scanned before whose schedule is to be decided again (migration 0862): their id, when the processor
    learned of them and their last scan, locked."""
    rows = await conn.fetch(
        "SELECT payment_id, created_at, last_synced_at FROM payments"
        " WHERE next_sync_at = '-infinity' AND last_synced_at > '-infinity' AND sync_locked_until < now()"
        " LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [(r["payment_id"], r["created_at"], r["last_synced_at"]) for r in rows]


async def reschedule_payments(conn: asyncpg.Connection, next_scans: dict[str, datetime | None]) -> None:
    """Each payment's next scan (None: never)."""
    await conn.execute(
        "UPDATE payments p SET next_sync_at = s.next_sync_at"
        " FROM unnest($1::text[], $2::timestamptz[]) AS s(payment_id, next_sync_at) WHERE p.payment_id = s.payment_id",
        list(next_scans),
        list(next_scans.values()),
    )


async def scan_payment_soon(conn: asyncpg.Connection, payment_id: str, after_seconds: float = 0.0) -> None:
    """Have the sync job scan the payment within ``after_seconds`` (at its next run, by default), whatever its
    schedule says, even past its refund window: a refund of it just changed, or a scan must look again."""
    await conn.execute(
        # One due already is the scan under way (or one soon) and is moved: the scan keeps a time set after its claim.
        "UPDATE payments SET next_sync_at = CASE WHEN next_sync_at > now()"
        "   THEN least(next_sync_at, now() + make_interval(secs => $2)) ELSE now() + make_interval(secs => $2) END"
        " WHERE payment_id = $1",
        payment_id,
        after_seconds,
    )


async def record_payment_sync_failed(
    conn: asyncpg.Connection, lease: SyncLease, error: str, *, retry_after_seconds: float
) -> None:
    """The scan of this payment failed: flag it, and try it again after ``retry_after_seconds`` (if the lease still
    holds: else the instance that took it over decides)."""
    await conn.execute(
        "UPDATE payments SET sync_failures = sync_failures + 1, sync_error = $3, sync_locked_until = '-infinity',"
        " sync_retry_at = now() + make_interval(secs => $4) WHERE payment_id = $1 AND sync_locked_until = $2",
        lease.payment.payment_id,
        lease.until,
        error[:1000],
        retry_after_seconds,
    )


async def lock_external_refund(conn: asyncpg.Connection, provider_refund_id: str) -> ExternalRefund | None:
    """The refund made elsewhere, locked with its payment, the payment first (as a refund's rows are)."""
    row = await conn.fetchrow(
        f"SELECT {_EXTERNAL_COLUMNS} FROM external_refunds x JOIN payments p ON p.payment_id = x.payment_id"
        " WHERE x.provider_refund_id = $1 FOR UPDATE OF p, x",
        provider_refund_id,
    )
    return _external(row) if row else None


async def insert_external_refund(conn: asyncpg.Connection, refund: ExternalRefund) -> bool:
    status = await conn.execute(
        "INSERT INTO external_refunds (provider_refund_id, payment_id, amount, currency, status, attributed)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        refund.provider_refund_id,
        refund.payment_id,
        refund.amount,
        refund.currency,
        refund.status,
        refund.attributed,
    )
    return bool(status == "INSERT 0 1")


async def record_external_refund_status(conn: asyncpg.Connection, provider_refund_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE external_refunds SET status = $2, updated_at = now() WHERE provider_refund_id = $1",
        provider_refund_id,
        status,
    )


async def claim_pending_external_refund(conn: asyncpg.Connection, older_than_seconds: float) -> str | None:
    """The attributed external refund pending longest past the threshold (asked about again until final), touched
    as ``repository.claim_stale_pending_refund`` touches ours."""
    found: str | None = await conn.fetchval(
        "UPDATE external_refunds x SET updated_at = now()"
        " FROM (SELECT provider_refund_id FROM external_refunds WHERE status = 'pending' AND attributed"
        "       AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT 1"
        "       FOR UPDATE SKIP LOCKED) due"
        " WHERE x.provider_refund_id = due.provider_refund_id RETURNING x.provider_refund_id",
        older_than_seconds,
    )
    return found


async def known_provider_refund_ids(conn: asyncpg.Connection, payment_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT a.provider_refund_id FROM refund_attempts a JOIN refunds r ON r.refund_id = a.refund_id"
        " WHERE r.payment_id = $1 AND a.provider_refund_id IS NOT NULL",
        payment_id,
    )
    return {r[0] for r in rows}


async def note_unrecorded_refund(
    conn: asyncpg.Connection, payment: Payment, reported: ProviderRefund, alert_after_seconds: float
) -> bool:
    """Remember a provider refund made for a refund id of ours we have no record of; True once, when it has
    stayed unrecorded for ``alert_after_seconds`` (time to tell the team). Seen first, the payment is scanned again
    once that time is up, whatever its schedule: only a scan raises the alert."""
    alert: bool | None = await conn.fetchval(
        "INSERT INTO unrecorded_provider_refunds (provider_refund_id, payment_id, refund_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (provider_refund_id) DO UPDATE SET alerted_at = now()"
        " WHERE unrecorded_provider_refunds.alerted_at IS NULL"
        "   AND unrecorded_provider_refunds.first_seen_at <= now() - make_interval(secs => $4)"
        " RETURNING alerted_at IS NOT NULL",
        reported.id,
        payment.payment_id,
        reported.refund_id,
        alert_after_seconds,
    )
    if alert is False:  # inserted: first seen now
        await scan_payment_soon(conn, payment.payment_id, alert_after_seconds)
    return bool(alert)


async def note_refund_of_another_payment(conn: asyncpg.Connection, payment: Payment, reported: ProviderRefund) -> bool:
    """Remember a refund listed for ``payment`` that refunds another payment; True the first time (tell the team)."""
    status = await conn.execute(
        "INSERT INTO refunds_listed_for_another_payment (provider_refund_id, payment_id) VALUES ($1, $2)"
        " ON CONFLICT (provider_refund_id) DO NOTHING",
        reported.id,
        payment.payment_id,
    )
    return bool(status == "INSERT 0 1")
