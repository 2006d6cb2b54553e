"""SQL for payments, refunds, their timeline and approvals. Functions take the caller's connection, so the caller
owns the transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from refundflow_intake import ledger
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.approval_rules import Approval
from refundflow_intake.domain import HOLDING_STATUSES, REFUNDING_STATUSES, RefundStatus, SubscriptionAction
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_intake.roles import Permission, roles_with
from refundflow_shared.database import SUBSCRIPTION_LOCKS
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import ERASED_ADDRESS, EventData
from refundflow_shared.metrics import REFUNDS, count_after_commit
from refundflow_shared.outbox import events_insert
from refundflow_shared.tracing import current_traceparent

Row = dict[str, Any]


@dataclass(frozen=True)
class Audit:
    """The timeline's entry for a status change, written by the same statement as the change: who made it, what
    they said, and what it was (the status entered, unless named)."""

    actor: str
    note: str | None = None
    action: str | None = None


def _audited(
    sql: str,
    args: list[Any],
    refund_id: str,
    status: str,
    audit: Audit,
    *,
    also: str = "",
    entries: Sequence[ledger.Entry] = (),
    events: Sequence[EventData] = (),
) -> tuple[str, list[Any]]:
    """``sql`` (a change of the refund's status) with its timeline entry written in the same statement, the
    statements ``also`` (more ``name AS (...)``, on ``args``), the balance ``entries`` it makes with them, and the
    ``events`` it causes, staged in the outbox."""
    entry = [refund_id, status, audit.actor, audit.note, audit.action or status, current_traceparent()]
    placeholders = ", ".join(f"${i}" for i in range(len(args) + 1, len(args) + len(entry) + 1))
    timeline = (
        "audit AS (INSERT INTO refund_timeline (refund_id, status, actor, note, action, traceparent)"
        f" VALUES ({placeholders}))"
    )
    with_effects, args = _with_effects([timeline, also] if also else [timeline], [*args, *entry], entries, events)
    return f"{with_effects} {sql}", args


def _with_effects(
    parts: Sequence[str],
    args: Sequence[Any],
    entries: Sequence[ledger.Entry],
    events: Sequence[EventData],
    *,
    only_if: str | None = None,
) -> tuple[str, list[Any]]:
    """The WITH of a change's statement: its ``parts`` (``name AS (...)``, on ``args``), then the balance ``entries``
    and the ``events`` the change makes (only if ``only_if``, a condition on the parts), and all their arguments."""
    parts, args = [*parts], [*args]
    if entries:
        ledger_parts, entry_args = ledger.entries_insert(entries, first=len(args) + 1, only_if=only_if)
        parts.append(ledger_parts)
        args += entry_args
    if events:
        staging, event_args = events_insert(events, source=INTAKE.source, first=len(args) + 1, only_if=only_if)
        parts.append(staging)
        args += event_args
    return f"WITH {', '.join(parts)}", args


_PAYMENT_COLUMNS = (
    "id",
    "merchant_id",
    "customer_email",
    "amount",
    "currency",
    "provider_payment_id",
    "paid_at",
    "product_id",
    "product_name",
    "product_kind",
    "customer_name",
    "product_category",
    "subscription_id",
    "subscription_period_start",
    "subscription_period_end",
)


async def insert_payment(conn: asyncpg.Connection, payment: Row, *, events: Sequence[EventData] = ()) -> Row | None:
    """The payment as stored, credited to its merchant's balance and its ``events`` staged in the same statement;
    None (and no credit, no event) when the payment id, or the provider payment, is already registered."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(_PAYMENT_COLUMNS) + 1))
    with_effects, args = _with_effects(
        [
            f"stored AS (INSERT INTO payments ({', '.join(_PAYMENT_COLUMNS)}) VALUES ({placeholders})"
            " ON CONFLICT DO NOTHING RETURNING *)"
        ],
        [payment.get(column) for column in _PAYMENT_COLUMNS],
        [ledger.payment_credit(payment)],
        events,
        only_if="EXISTS (SELECT FROM stored)",
    )
    row = await conn.fetchrow(f"{with_effects} SELECT * FROM stored", *args)
    return dict(row) if row else None


class PaymentIdentity(NamedTuple):
    """What a registration says of a payment: a registration repeated (through the API, or billing's
    payment.succeeded again) must say all of it again, or it is refused (the API's 409, billing's dead-lettered)."""

    merchant_id: str
    provider_payment_id: str
    customer_email: str
    customer_name: str | None
    amount: int
    currency: str
    paid_at: datetime
    product_id: str
    product_name: str
    product_kind: str
    product_category: str | None
    subscription_id: str | None
    subscription_period_start: datetime | None
    subscription_period_end: datetime | None


def payment_identity(payment: Mapping[str, Any]) -> PaymentIdentity:
    said = {field: payment[field] for field in PaymentIdentity._fields}
    # Mail goes to an address whatever its letters' case (the dashboard's search ignores it too).
    return PaymentIdentity(**{**said, "customer_email": said["customer_email"].lower()})


_CUSTOMER_IDENTITY = ("customer_email", "customer_name")


def payment_differences(registered: PaymentIdentity, said: PaymentIdentity) -> list[str]:
    """The fields a repeated registration says otherwise than the registered payment (none: the same payment)."""
    pairs = zip(PaymentIdentity._fields, registered, said, strict=True)
    # An erased payment's customer is no longer known: a replay naming them is the same payment, and restores nothing.
    erased = registered.customer_email == ERASED_ADDRESS
    return [field for field, first, again in pairs if first != again and not (erased and field in _CUSTOMER_IDENTITY)]


async def payment_identities(conn: asyncpg.Connection, payment_ids: list[str]) -> dict[str, PaymentIdentity]:
    """What identifies each of these payments that is registered, by payment id."""
    rows = await conn.fetch(
        f"SELECT id, {', '.join(PaymentIdentity._fields)} FROM payments WHERE id = ANY($1::text[])", payment_ids
    )
    return {row["id"]: payment_identity(row) for row in rows}


async def payment_of_provider(conn: asyncpg.Connection, provider_payment_id: str) -> Row | None:
    """The payment that owns a provider payment (earlier conflicting registrations aside), or None."""
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE provider_payment_id = $1 AND NOT provider_payment_conflict", provider_payment_id
    )
    return dict(row) if row else None


# A payment with what customer-facing events say of its merchant (``portal.links.to_customer``): read with the
# payment, not after it. A lock never takes the merchant's row (``FOR UPDATE OF p``).
# A subscription has ended once cancelled now, or at a period's end that has passed, or once a decision asked the
# provider to cancel it now (through any payment of it).
_PAYMENT_AND_MERCHANT_COLUMNS = (
    "p.*, m.name AS merchant_name, m.portal_enabled, p.subscription_canceled_at IS NOT NULL"
    " AND coalesce(p.subscription_access_until <= now(), true)"
    " OR EXISTS (SELECT 1 FROM payments q WHERE q.merchant_id = p.merchant_id AND q.subscription_id = p.subscription_id"
    " AND q.subscription_cancel_requested_at IS NOT NULL) AS subscription_ended"
)
_PAYMENTS_AND_MERCHANTS = "payments p JOIN merchants m ON m.id = p.merchant_id"


async def lock_subscription(conn: asyncpg.Connection, merchant_id: str, subscription_id: str) -> None:
    """Take the subscription's lock, held to the end of the transaction (taking it again is free). Taken before any
    of its payments' rows, always: a transaction deciding on two of its payments and one deciding on the second
    would otherwise each hold a row the other waits for, one of them through the subscription's lock."""
    # The lock's name is a stable hash of merchant and subscription ids (a collision only makes two take turns).
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", SUBSCRIPTION_LOCKS, f"{merchant_id}:{subscription_id}"
    )


async def get_payment(conn: asyncpg.Connection, merchant_id: str, payment_id: str, *, lock: bool = False) -> Row | None:
    """The merchant's payment with its merchant's name and portal switch, or None (another merchant's payment does
    not exist for this one). ``lock``: its row, after its subscription's lock (``lock_subscription``)."""
    if lock:
        subscription_id = await conn.fetchval(
            "SELECT subscription_id FROM payments WHERE id = $1 AND merchant_id = $2", payment_id, merchant_id
        )
        if subscription_id is not None:  # a payment's subscription never changes, so it is read before the lock
            await lock_subscription(conn, merchant_id, subscription_id)
    sql = (
        f"SELECT {_PAYMENT_AND_MERCHANT_COLUMNS} FROM {_PAYMENTS_AND_MERCHANTS} WHERE p.id = $1 AND p.merchant_id = $2"
        + (" FOR UPDATE OF p" if lock else "")
    )
    row = await conn.fetchrow(sql, payment_id, merchant_id)
    return dict(row) if row else None


async def record_cancel_requested(conn: asyncpg.Connection, payment_id: str, *, at_period_end: bool) -> None:
    """A decision asked the provider to cancel the payment's subscription, now or at its period's end (the caller
    holds its lock)."""
    column = "subscription_cancel_at_period_end_requested_at" if at_period_end else "subscription_cancel_requested_at"
    await conn.execute(
        f"UPDATE payments SET {column} = coalesce({column}, now()),"
        " subscription_cancel_failed_at = NULL, subscription_cancel_failure = NULL WHERE id = $1",
        payment_id,
    )


async def record_cancel_form_key(conn: asyncpg.Connection, payment_id: str, form_key: str) -> None:
    """The dashboard form ``form_key`` asked the payment's cancel (the caller holds its lock): sent again, it asks
    nothing."""
    await conn.execute("UPDATE payments SET subscription_cancel_form_key = $2 WHERE id = $1", payment_id, form_key)


async def forget_cancel_requested(
    conn: asyncpg.Connection,
    merchant_id: str,
    payment_id: str,
    subscription_id: str,
    *,
    at_period_end: bool,
    reason: str,
) -> None:
    """The provider refused the cancel asked through the payment (now, or at its period's end): it counts as asked
    no longer, so that asking it again asks the provider again; the payment shows the refusal until then."""
    await lock_subscription(conn, merchant_id, subscription_id)
    column = "subscription_cancel_at_period_end_requested_at" if at_period_end else "subscription_cancel_requested_at"
    await conn.execute(
        f"UPDATE payments SET {column} = NULL, subscription_cancel_failed_at = now(), subscription_cancel_failure = $4"
        " WHERE id = $2 AND merchant_id = $1 AND subscription_id = $3",
        merchant_id,
        payment_id,
        subscription_id,
        reason,
    )


async def record_extension_granted(conn: asyncpg.Connection, payment_id: str, days: int) -> None:
    """A decision granted goodwill days: the payment expects them until the provider makes or refuses them."""
    await conn.execute(
        "UPDATE payments SET subscription_extension_pending_days = coalesce(subscription_extension_pending_days, 0)"
        " + $2, subscription_extension_failed_at = NULL, subscription_extension_failure = NULL WHERE id = $1",
        payment_id,
        days,
    )


# The days an extension's outcome ($4) settles, no longer expected (a repeated outcome counts down to none, not below).
_EXTENSION_SETTLED = (
    "subscription_extension_pending_days = nullif(greatest(subscription_extension_pending_days - $4, 0), 0)"
)


async def record_extension_failed(
    conn: asyncpg.Connection, merchant_id: str, payment_id: str, subscription_id: str, days: int, reason: str
) -> None:
    """The provider refused an extension of ``days``: no longer expected, and the payment shows the refusal."""
    await lock_subscription(conn, merchant_id, subscription_id)
    await conn.execute(
        f"UPDATE payments SET {_EXTENSION_SETTLED}, subscription_extension_failed_at = now(),"
        " subscription_extension_failure = $5 WHERE id = $2 AND merchant_id = $1 AND subscription_id = $3",
        merchant_id,
        payment_id,
        subscription_id,
        days,
        reason,
    )


async def cancel_already_asked(conn: asyncpg.Connection, payment: Row, *, at_period_end: bool) -> bool:
    """Whether cancelling the payment's subscription this way would ask nothing new: it has ended (cancelled now, or
    asked to be, through any payment of it), or it is cancelled, or asked to be, at its period's end already. A
    cancel at the period's end that a payment of the subscription was paid after counts for nothing: the merchant
    took it back at the provider, and the subscription went on.

    Holds the subscription's lock to the end of the caller's transaction, which asks the cancel when this says none
    was (the caller took it already, locking its payment): else two requests through two payments of one
    subscription (its first and a renewal) both read none asked, and both asked. Read after the lock, in a
    statement of its own: a request it waited for is seen."""
    await lock_subscription(conn, payment["merchant_id"], payment["subscription_id"])
    asked: bool = await conn.fetchval(
        "SELECT coalesce(bool_or(subscription_cancel_requested_at IS NOT NULL"
        "  OR subscription_canceled_at IS NOT NULL AND subscription_access_until IS NULL"
        "  OR (subscription_access_until <= now()"
        "      OR $3 AND (subscription_access_until IS NOT NULL"
        "                 OR subscription_cancel_at_period_end_requested_at IS NOT NULL))"
        "     AND NOT EXISTS (SELECT 1 FROM payments later"
        "                     WHERE later.merchant_id = $1 AND later.subscription_id = $2"
        "                     AND later.paid_at > greatest(p.subscription_canceled_at,"
        "                                                  p.subscription_cancel_at_period_end_requested_at))),"
        " false)"
        " FROM payments p WHERE merchant_id = $1 AND subscription_id = $2",
        payment["merchant_id"],
        payment["subscription_id"],
        at_period_end,
    )
    return asked


async def record_subscription_canceled(
    conn: asyncpg.Connection, merchant_id: str, payment_id: str, subscription_id: str, access_until: datetime | None
) -> None:
    """The subscription the payment paid for is cancelled (``access_until``: the period's end it runs to): for
    every payment of it, renewals too, locked in payment id order as every writer locks payments. Its payments'
    reports come on their own keys, in any order: a schedule read after a cancel now leaves it ended."""
    await lock_subscription(conn, merchant_id, subscription_id)
    await conn.execute(
        "UPDATE payments p SET subscription_canceled_at = coalesce(p.subscription_canceled_at, now()),"
        " subscription_access_until = CASE WHEN p.subscription_canceled_at IS NOT NULL"
        " AND p.subscription_access_until IS NULL THEN NULL ELSE $4::timestamptz END"
        " FROM (SELECT id FROM payments WHERE merchant_id = $1 AND subscription_id = $3"
        '       ORDER BY id COLLATE "C" FOR UPDATE) AS mine'
        " WHERE p.id = mine.id"
        " AND EXISTS (SELECT 1 FROM payments WHERE id = $2 AND merchant_id = $1 AND subscription_id = $3)",
        merchant_id,
        payment_id,
        subscription_id,
        access_until,
    )


async def record_subscription_extended(
    conn: asyncpg.Connection,
    merchant_id: str,
    payment_id: str,
    subscription_id: str,
    period_end: datetime,
    *,
    days: int,
    last_period: bool,
) -> None:
    """Goodwill days pushed the subscription's period end (its next payment) back to ``period_end``; the latest
    extension wins, whatever order the reports come in. ``last_period``: it is set to end then (cancelled at its
    period's end), so its access recorded with that cancel lasts until the new end, for every payment of it."""
    await lock_subscription(conn, merchant_id, subscription_id)
    if last_period:  # every payment of it, locked in payment id order as every writer locks payments
        await conn.execute(
            "UPDATE payments p SET subscription_access_until = greatest(p.subscription_access_until, $3)"
            " FROM (SELECT id FROM payments WHERE merchant_id = $1 AND subscription_id = $2"
            '       ORDER BY id COLLATE "C" FOR UPDATE) AS mine'
            " WHERE p.id = mine.id AND p.subscription_access_until IS NOT NULL",
            merchant_id,
            subscription_id,
            period_end,
        )
    await conn.execute(
        f"UPDATE payments SET subscription_period_extended_to = greatest(subscription_period_extended_to, $5),"
        f" {_EXTENSION_SETTLED} WHERE id = $2 AND merchant_id = $1 AND subscription_id = $3",
        merchant_id,
        payment_id,
        subscription_id,
        days,
        period_end,
    )


async def lock_refund_and_payment(
    conn: asyncpg.Connection, refund_id: str, merchant_id: str | None
) -> tuple[Row, Row] | None:
    """A refund and its payment (with its merchant's name and portal switch), both locked in one round trip, the
    payment first as every writer locks them; with ``merchant_id``, only if the refund is that merchant's. None if
    there is no such refund. (Both rows are locked, so a wait for either reads both as they are once it ends.) A
    subscription's payment is locked after its subscription (``lock_subscription``)."""
    subscription = await conn.fetchrow(
        "SELECT p.merchant_id, p.subscription_id FROM refunds r JOIN payments p ON p.id = r.payment_id"
        " WHERE r.id = $1 AND ($2::text IS NULL OR r.merchant_id = $2) AND p.subscription_id IS NOT NULL",
        refund_id,
        merchant_id,
    )
    if subscription is not None:  # a payment's subscription never changes, so it is read before the lock
        await lock_subscription(conn, subscription["merchant_id"], subscription["subscription_id"])
    row = await conn.fetchrow(
        f"SELECT {_PAYMENT_AND_MERCHANT_COLUMNS}, r AS refund FROM {_PAYMENTS_AND_MERCHANTS}"
        " JOIN refunds r ON r.payment_id = p.id"
        " WHERE r.id = $1 AND ($2::text IS NULL OR r.merchant_id = $2) FOR UPDATE OF p, r",
        refund_id,
        merchant_id,
    )
    if row is None:
        return None
    payment = dict(row)
    return dict(payment.pop("refund")), payment


def disputed_sql(payment: str) -> str:
    """SQL: whether the payment row ``payment`` (an alias) is disputed by its own merchant. Billing may name the
    payment by our id, by the provider's, or by its own (``payment_aliases``: billing's id for the provider payment
    we registered under ours), and a dispute names one id without saying which: it counts for each payment of the
    merchant it could mean (blocking a refund is safe, paying a disputed payment back twice is not). Matched as
    read, so a dispute recorded before its payment, or before billing's id for it, counts once that comes."""
    # One probe of the disputes' key with every id it may go by: it stays one per payment shown, as a join of all
    # aliases with all disputes (the plan an OR of two EXISTS gets in a listing) would not.
    return (
        f"EXISTS (SELECT 1 FROM payment_disputes d WHERE d.merchant_id = {payment}.merchant_id"
        f" AND d.payment_id = ANY(ARRAY[{payment}.id, {payment}.provider_payment_id]"
        f" || ARRAY(SELECT a.payment_id FROM payment_aliases a WHERE a.merchant_id = {payment}.merchant_id"
        f" AND a.provider_payment_id = {payment}.provider_payment_id)))"
    )


async def disputed_per_currency(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    """Per currency, how many of the merchant's payments are disputed and what they amount to, found from the
    merchant's disputes by the rule ``disputed_sql`` applies (our id, the provider's, billing's id for it), each
    payment once however many ways it is named. The ledger knows nothing of disputes: the balance's available still
    counts these payments, whatever the provider took back."""
    rows = await conn.fetch(
        "WITH disputes AS (SELECT payment_id FROM payment_disputes WHERE merchant_id = $1),"
        # Provider payments, named as themselves or by billing's id for them.
        " provider_ids AS (SELECT payment_id AS provider_payment_id FROM disputes"
        "  UNION SELECT a.provider_payment_id FROM disputes d"
        "  JOIN payment_aliases a ON a.payment_id = d.payment_id AND a.merchant_id = $1),"
        " disputed AS (SELECT p.id, p.currency, p.amount FROM disputes d JOIN payments p ON p.id = d.payment_id"
        "  WHERE p.merchant_id = $1"
        # Split by provider_payment_conflict, as the two indexes on the provider payment are.
        "  UNION SELECT p.id, p.currency, p.amount FROM provider_ids i JOIN payments p"
        "  ON p.provider_payment_id = i.provider_payment_id AND NOT p.provider_payment_conflict"
        "  WHERE p.merchant_id = $1"
        "  UNION SELECT p.id, p.currency, p.amount FROM provider_ids i JOIN payments p"
        "  ON p.provider_payment_id = i.provider_payment_id AND p.provider_payment_conflict WHERE p.merchant_id = $1)"
        " SELECT currency, count(*) AS disputed_payments, sum(amount)::bigint AS disputed FROM disputed"
        " GROUP BY currency ORDER BY currency",
        merchant_id,
    )
    return [dict(r) for r in rows]


# A dispute of payment $1 by its own merchant.
_DISPUTED = f"EXISTS (SELECT 1 FROM payments p WHERE p.id = $1 AND {disputed_sql('p')})"
# $1 the payment, $2 the holding statuses.
_HELD_AND_DISPUTED = f"held_by_refunds($1, $2::text[]) AS held, {_DISPUTED} AS disputed"


def _refunded_besides(payment: str, refund: str, refunding: str) -> str:
    """SQL: what the refunds of ``payment`` other than ``refund`` (NULL: none) sent or are sending, external ones
    included (``held_by_refunds`` with the refunding statuses), parameters named as the statement numbers them."""
    return (
        f"held_by_refunds({payment}, {refunding}::text[])"
        f" - coalesce((SELECT amount FROM refunds WHERE id = {refund} AND status = ANY({refunding}::text[])), 0)"
    )


async def refunded_besides(conn: asyncpg.Connection, payment_id: str, refund_id: str) -> int:
    """What the payment's other refunds sent or are sending: the two-person rule counts it with this one's."""
    refunded: int = await conn.fetchval(
        f"SELECT {_refunded_besides('$1', '$2', '$3')}", payment_id, refund_id, [s.value for s in REFUNDING_STATUSES]
    )
    return refunded


async def held_and_disputed(conn: asyncpg.Connection, payment_id: str) -> tuple[int, bool]:
    """What the payment's refunds hold, and whether it is disputed (one round trip for the hot paths)."""
    row = await conn.fetchrow(f"SELECT {_HELD_AND_DISPUTED}", payment_id, [s.value for s in HOLDING_STATUSES])
    return int(row["held"]), bool(row["disputed"])


async def amount_held_by_refunds(conn: asyncpg.Connection, payment_id: str) -> int:
    held: int = await conn.fetchval(
        "SELECT held_by_refunds($1, $2::text[])",
        payment_id,
        [s.value for s in HOLDING_STATUSES],
    )
    return held


async def add_to_refunded_amount(conn: asyncpg.Connection, payment_id: str, amount: int) -> None:
    """Add ``amount`` (negative: give back) to what was refunded of the payment."""
    await conn.execute("UPDATE payments SET refunded_amount = refunded_amount + $2 WHERE id = $1", payment_id, amount)


async def record_dispute(conn: asyncpg.Connection, dispute: Row) -> None:
    await conn.execute(
        "INSERT INTO payment_disputes (payment_id, merchant_id, dispute_id, reason) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (payment_id, merchant_id) DO NOTHING",
        dispute["payment_id"],
        dispute["merchant_id"],
        dispute["dispute_id"],
        dispute["reason"],
    )


async def record_payment_alias(
    conn: asyncpg.Connection, payment_id: str, merchant_id: str, provider_payment_id: str
) -> None:
    """Billing's id ``payment_id`` for the merchant's provider payment, registered under another id."""
    await conn.execute(
        "INSERT INTO payment_aliases (payment_id, merchant_id, provider_payment_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (payment_id, merchant_id) DO NOTHING",
        payment_id,
        merchant_id,
        provider_payment_id,
    )


async def payment_of_alias(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> str | None:
    """Our id for the merchant's payment that billing calls ``payment_id`` (``record_payment_alias``), if it does."""
    found: str | None = await conn.fetchval(
        "SELECT p.id FROM payment_aliases a JOIN payments p"
        " ON p.provider_payment_id = a.provider_payment_id AND p.merchant_id = a.merchant_id"
        " WHERE a.payment_id = $1 AND a.merchant_id = $2",
        payment_id,
        merchant_id,
    )
    return found


async def is_disputed(conn: asyncpg.Connection, payment_id: str) -> bool:
    return bool(await conn.fetchval(f"SELECT {_DISPUTED}", payment_id))


async def subscription_period_end(conn: asyncpg.Connection, merchant_id: str, subscription_id: str) -> datetime | None:
    """The subscription's latest period's end, goodwill days included: its latest payment's (an earlier one's is
    gone by once it has renewed), or an extension of any of its payments beyond it."""
    end: datetime | None = await conn.fetchval(
        "SELECT max(coalesce(subscription_period_extended_to, subscription_period_end)) FROM payments"
        " WHERE merchant_id = $1 AND subscription_id = $2",
        merchant_id,
        subscription_id,
    )
    return end


async def has_open_customer_request(conn: asyncpg.Connection, payment_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM refunds WHERE payment_id = $1 AND status = 'pending' AND channel <> 'api')",
            payment_id,
        )
    )


_REFUND_COLUMNS = (
    "id",
    "merchant_id",
    "payment_id",
    "amount",
    "currency",
    "reason",
    "status",
    "reason_details",
    "channel",
    "flags",
    "judged_by",
    "requested_amount",
    "review_target_hours",
    "review_due_at",
    "cancel_subscription",
)


async def insert_refund(
    conn: asyncpg.Connection, refund: Row, audit: Audit, *, events: Sequence[EventData] = ()
) -> None:
    """A new refund, with its timeline entry and the ``events`` it causes, in one statement."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(_REFUND_COLUMNS) + 1))
    sql, args = _audited(
        f"INSERT INTO refunds ({', '.join(_REFUND_COLUMNS)}) VALUES ({placeholders})",
        [refund.get(column) for column in _REFUND_COLUMNS],
        refund["id"],
        refund["status"],
        audit,
        events=events,
    )
    await conn.execute(sql, *args)
    _count_status(refund["status"])


async def get_refund(conn: asyncpg.Connection, refund_id: str, *, merchant_id: str | None = None) -> Row | None:
    """A refund by id; with ``merchant_id``, only if it is that merchant's."""
    row = await conn.fetchrow(
        "SELECT * FROM refunds WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2)", refund_id, merchant_id
    )
    return dict(row) if row else None


async def update_refund_status(
    conn: asyncpg.Connection,
    refund_id: str,
    status: RefundStatus,
    audit: Audit,
    *,
    failure_reason: str | None = None,
    provider_refund_id: str | None = None,
    refunded: int = 0,
    entries: Sequence[ledger.Entry] = (),
) -> None:
    """The refund's new status (and the provider's id of it, when told); with ``refunded``, what was refunded of its
    payment moves by that much (negative: given back), and the balance ``entries`` are made, in the same
    statement."""
    sql, args = _audited(
        "UPDATE refunds SET status = $2, failure_reason = coalesce($3, failure_reason),"
        " provider_refund_id = coalesce($5, provider_refund_id), updated_at = now() WHERE id = $1",
        [refund_id, status.value, failure_reason, refunded, provider_refund_id],
        refund_id,
        status.value,
        audit,
        also="refunded AS (UPDATE payments SET refunded_amount = refunded_amount + $4"
        " WHERE $4 <> 0 AND id = (SELECT payment_id FROM refunds WHERE id = $1))",
        entries=entries,
    )
    await conn.execute(sql, *args)
    _count_status(status.value)


def _add_approval(row: str) -> str:
    """An actor's approval (``row``: refund id, actor, amount, subscription action, extension days, message to the
    customer); a new one replaces theirs."""
    return (
        "INSERT INTO refund_approvals (refund_id, actor, amount, subscription_action, extend_days, customer_note)"
        f" {row} ON CONFLICT (refund_id, actor) DO UPDATE SET amount = EXCLUDED.amount,"
        " subscription_action = EXCLUDED.subscription_action, extend_days = EXCLUDED.extend_days,"
        " customer_note = EXCLUDED.customer_note, approved_at = now()"
    )


async def approvers_before_the_decision(conn: asyncpg.Connection, refund: Row) -> frozenset[str]:
    """Who approved the decided ``refund``'s amount before its decision (the one who completed it approved with
    the decision, at its ``decided_at``)."""
    rows = await conn.fetch(
        "SELECT actor FROM refund_approvals WHERE refund_id = $1 AND amount = $2 AND approved_at < $3",
        refund["id"],
        refund["amount"],
        refund["decided_at"],
    )
    return frozenset(row["actor"] for row in rows)


async def record_decision(
    conn: asyncpg.Connection,
    refund_id: str,
    decision: Row,
    audit: Audit,
    *,
    approved: bool = False,
    entries: Sequence[ledger.Entry] = (),
    events: Sequence[EventData] = (),
) -> None:
    """The merchant's decision: status, the amount approved, what happens to the subscription, the team's note and
    the note told to the customer. ``approved``: the actor's approval of that amount is added in the same
    statement (``add_approval``), with what the decision chose, as are the balance ``entries`` it makes and the
    ``events`` it causes."""
    sql, args = _audited(
        "UPDATE refunds SET status = $2, amount = $3, subscription_action = $4, extend_days = $5,"
        " decision_note = $6, customer_note = $7, decided_at = now(), updated_at = now() WHERE id = $1",
        [
            refund_id,
            decision["status"],
            decision["amount"],
            decision.get("subscription_action"),
            decision.get("extend_days"),
            decision.get("note"),
            decision.get("customer_note"),
            audit.actor if approved else None,
        ],
        refund_id,
        decision["status"],
        audit,
        also=f"approval AS ({_add_approval('SELECT $1, $8::text, $3, $4, $5, $7 WHERE $8 IS NOT NULL')})",
        entries=entries,
        events=events,
    )
    await conn.execute(sql, *args)
    _count_status(decision["status"])


def _count_status(status: str) -> None:
    """Every status a refund enters is written by one of the three functions above: counted once it committed."""
    count_after_commit(REFUNDS.labels(RefundStatus(status).value).inc)


async def add_timeline_entry(
    conn: asyncpg.Connection,
    refund_id: str,
    status: RefundStatus,
    actor: str,
    note: str | None = None,
    *,
    action: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO refund_timeline (refund_id, status, actor, note, action, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        refund_id,
        status.value,
        actor,
        note,
        action or status.value,
        current_traceparent(),  # the trace of the request or event that made this step
    )


# Who an actor is, as a person reads it: the person's name and email, or the API key's name (with _ACTOR_JOINS).
_ACTOR_NAME = (
    "CASE WHEN u.id IS NOT NULL THEN coalesce(u.display_name || ' <' || u.email || '>', u.email)"
    "     WHEN k.id IS NOT NULL THEN 'API key ' || coalesce(k.name, k.id) END"
)


def _actor_joins(actor: str) -> str:
    return (
        f" LEFT JOIN merchant_users u ON {actor} LIKE 'user:%' AND u.id = substr({actor}, 6)"
        f" LEFT JOIN api_keys k ON {actor} LIKE 'api_key:%' AND k.id = substr({actor}, 9)"
    )


# Each entry with ``actor_name``.
_TIMELINE = (
    f"SELECT (t.status, coalesce(t.action, t.status), t.actor, t.note, t.at, {_ACTOR_NAME})"
    f" FROM refund_timeline t{_actor_joins('t.actor')}"
)
_TIMELINE_KEYS = ("status", "action", "actor", "note", "at", "actor_name")


# An approval counts only while its author may still decide refunds: a member not removed whose role decides
# them, or a key not revoked. A removed or demoted member's approval, or a revoked key's, has lapsed.
_DECIDING_ROLES = ", ".join(f"'{role.value}'" for role in roles_with(Permission.DECIDE_REFUNDS))  # enum values
_STILL_DECIDES = (
    "(EXISTS (SELECT 1 FROM merchant_users u WHERE a.actor LIKE 'user:%' AND u.id = substr(a.actor, 6)"
    f" AND u.removed_at IS NULL AND u.role IN ({_DECIDING_ROLES}))"
    " OR EXISTS (SELECT 1 FROM api_keys k WHERE a.actor LIKE 'api_key:%' AND k.id = substr(a.actor, 9)"
    " AND k.revoked_at IS NULL))"
)


# Who approved so far: of a pending refund, only the approvals that still count.
_APPROVERS = (
    f"SELECT a.actor FROM refund_approvals a WHERE a.refund_id = r.id AND (r.status <> 'pending' OR {_STILL_DECIDES})"
    " ORDER BY a.approved_at, a.actor"
)


async def approvals_that_count(conn: asyncpg.Connection, refund_id: str) -> list[Row]:
    """Of a pending refund, who approved it so far and still counts, oldest first: each ``actor``, its
    ``actor_name``, the ``amount``, ``subscription_action`` and ``extend_days`` it approved (what the next approver
    must approve too) and the ``customer_note`` it would tell the customer."""
    rows = await conn.fetch(
        "SELECT a.actor, a.amount, a.subscription_action, a.extend_days, a.customer_note,"
        f" {_ACTOR_NAME} AS actor_name FROM refund_approvals a{_actor_joins('a.actor')}"
        f" WHERE a.refund_id = $1 AND {_STILL_DECIDES} ORDER BY a.approved_at, a.actor",
        refund_id,
    )
    return [dict(r) for r in rows]


async def refund_with_history(conn: asyncpg.Connection, refund_id: str, merchant_id: str) -> Row | None:
    """The merchant's refund with its timeline (oldest first) and who approved it so far, in one round trip."""
    row = await conn.fetchrow(
        f"SELECT r.*, ARRAY({_TIMELINE} WHERE t.refund_id = r.id ORDER BY t.id) AS timeline,"
        f" ARRAY({_APPROVERS}) AS approvers"
        " FROM refunds r WHERE r.id = $1 AND r.merchant_id = $2",
        refund_id,
        merchant_id,
    )
    if row is None:
        return None
    found = dict(row)
    found["timeline"] = [dict(zip(_TIMELINE_KEYS, entry, strict=True)) for entry in found["timeline"]]
    return found


async def refund_timeline(conn: asyncpg.Connection, refund_id: str) -> list[Row]:
    """The refund's entries, oldest first, each with ``actor_name``."""
    entries = await conn.fetchval(f"SELECT ARRAY({_TIMELINE} WHERE t.refund_id = $1 ORDER BY t.id)", refund_id)
    return [dict(zip(_TIMELINE_KEYS, entry, strict=True)) for entry in entries]


async def refunds_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[Row]:
    rows = await conn.fetch("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, id", payment_id)
    return [dict(r) for r in rows]


async def external_refunds_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[Row]:
    """The refunds of the payment made outside Refundflow, as the provider last reported them, oldest first."""
    rows = await conn.fetch(
        "SELECT provider_refund_id, amount, currency, status, detected_at, updated_at FROM external_refunds"
        " WHERE payment_id = $1 ORDER BY detected_at, provider_refund_id",
        payment_id,
    )
    return [dict(r) for r in rows]


async def add_approval(conn: asyncpg.Connection, refund_id: str, actor: str, approval: Approval) -> None:
    action = approval.subscription_action
    await conn.execute(
        _add_approval("VALUES ($1, $2, $3, $4, $5, $6)"),
        refund_id,
        actor,
        approval.amount,
        action.value if action else None,
        approval.extend_days,
        approval.note_to_customer,
    )


async def discard_approvals(conn: asyncpg.Connection, refund_id: str, actors: tuple[str, ...]) -> None:
    await conn.execute(
        "DELETE FROM refund_approvals WHERE refund_id = $1 AND actor = ANY($2::text[])", refund_id, list(actors)
    )


@dataclass(frozen=True)
class Standing:
    """Where a payment stands when a refund of it is requested or approved."""

    held: int  # what its refunds hold
    refunded_by_others: int  # what its refunds other than the one approved sent or are sending (``refunded_besides``)
    disputed: bool
    policy: RefundPolicy  # what applies to its product
    approvals: dict[str, Approval]  # who approved the refund so far and still counts, in order, and what each approved
    lapsed: tuple[str, ...]  # who approved it but may no longer decide refunds: their approvals count for nothing


async def standing(conn: asyncpg.Connection, payment: Row, refund_id: str | None = None) -> Standing:
    """``held_and_disputed``, what the refunds besides ``refund_id`` sent, the policy, and the approvals of
    ``refund_id`` (none without one): one round trip for a request or an approval."""
    row = await conn.fetchrow(
        f"SELECT {_HELD_AND_DISPUTED}, {policies.documents_column('$3', '$4')},"
        f" {_refunded_besides('$1', '$5', '$6')} AS refunded_by_others,"
        " ARRAY(SELECT (a.actor, a.amount, a.subscription_action, a.extend_days, a.customer_note,"
        f" {_STILL_DECIDES}) FROM refund_approvals a WHERE a.refund_id = $5"
        " ORDER BY a.approved_at, a.actor) AS approvals",
        payment["id"],
        [s.value for s in HOLDING_STATUSES],
        payment["merchant_id"],
        payment["product_id"],
        refund_id,
        [s.value for s in REFUNDING_STATUSES],
    )
    return Standing(
        held=int(row["held"]),
        refunded_by_others=int(row["refunded_by_others"]),
        disputed=bool(row["disputed"]),
        policy=policies.policy_from(row["policy_documents"], payment["product_id"]),
        approvals={
            actor: Approval(amount, SubscriptionAction(action) if action else None, days, told)
            for actor, amount, action, days, told, counts in row["approvals"]
            if counts
        },
        lapsed=tuple(actor for actor, *_, counts in row["approvals"] if not counts),
    )
