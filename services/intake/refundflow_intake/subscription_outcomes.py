"""What the provider did to a subscription because of a refund decision (cancelled it, moved its period end, or
refused to cancel or extend it), reported by the processor: recorded on the payment, and added to that refund's
timeline, in words both the team and the customer read (the customer sees no refusal: the team settles it)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from refundflow_intake import repository
from refundflow_intake.domain import RefundStatus
from refundflow_shared.events import (
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
    SubscriptionExtensionFailed,
)


def _day(value: datetime) -> str:
    return f"{value.day} {value.strftime('%B %Y')}"


async def _note_on_refund(
    conn: asyncpg.Connection,
    data: SubscriptionCanceled | SubscriptionExtended | SubscriptionCancelFailed | SubscriptionExtensionFailed,
    action: str,
    words: str,
    actor: str,
) -> None:
    if data.refund_id is None:
        return  # cancelled without a refund request: nothing to add it to
    refund = await repository.get_refund(conn, data.refund_id, merchant_id=data.merchant_id)
    if refund is None or refund["payment_id"] != data.payment_id:
        return  # not this merchant's request about this payment: nothing of it is recorded
    await repository.add_timeline_entry(conn, refund["id"], RefundStatus(refund["status"]), actor, words, action=action)


async def record_canceled(conn: asyncpg.Connection, data: SubscriptionCanceled, *, actor: str) -> None:
    access_until = data.ends_at if data.at_period_end else None
    await repository.record_subscription_canceled(
        conn, data.merchant_id, data.payment_id, data.subscription_id, access_until
    )
    if data.already_ended:  # the provider had ended it before the decision's cancel: not cancelled now
        on = f" on {_day(data.ends_at)}" if data.ends_at is not None else ""
        words = f"The subscription had already ended{on}: no further payments"
    elif data.at_period_end and data.ends_at is not None:
        words = f"Subscription cancelled: access lasts until {_day(data.ends_at)}, with no further payments"
    else:
        words = "Subscription cancelled: no further payments"
    await _note_on_refund(conn, data, "subscription_canceled", words, actor)


async def record_cancel_failed(conn: asyncpg.Connection, data: SubscriptionCancelFailed, *, actor: str) -> None:
    """The provider refused the cancel: it no longer counts as asked, so the team can ask it again."""
    await repository.forget_cancel_requested(
        conn,
        data.merchant_id,
        data.payment_id,
        data.subscription_id,
        at_period_end=data.at_period_end,
        reason=data.reason,
    )
    when = "at the period's end" if data.at_period_end else "now"
    words = (
        f"Subscription not cancelled ({when}): the provider refused ({data.reason}). The customer may still be"
        " billed: cancel it again on the payment's page in the dashboard (or through the API), or at the provider"
    )
    await _note_on_refund(conn, data, "subscription_cancel_failed", words, actor)


async def record_extended(conn: asyncpg.Connection, data: SubscriptionExtended, *, actor: str) -> None:
    await repository.record_subscription_extended(
        conn,
        data.merchant_id,
        data.payment_id,
        data.subscription_id,
        data.current_period_end,
        days=data.days,
        last_period=data.last_period,
    )
    await _note_on_refund(conn, data, "subscription_extended", extension_words(data), actor)


async def record_extension_failed(conn: asyncpg.Connection, data: SubscriptionExtensionFailed, *, actor: str) -> None:
    """The provider refused the goodwill days: the payment expects them no longer, and the request says so."""
    await repository.record_extension_failed(
        conn, data.merchant_id, data.payment_id, data.subscription_id, data.days, data.reason
    )
    days = f"{data.days} day" if data.days == 1 else f"{data.days} days"
    words = (
        f"Subscription not extended by {days}: the provider refused ({data.reason}). The customer was not told;"
        " the period ends, and the next payment is due, as before"
    )
    await _note_on_refund(conn, data, "subscription_extension_failed", words, actor)


def extension_words(data: SubscriptionExtended) -> str:
    """A cancel-only decision's goodwill days lengthen the last period: no payment follows it."""
    by, until = f"{data.days} day" if data.days == 1 else f"{data.days} days", _day(data.current_period_end)
    if data.last_period:
        return f"Subscription extended by {by}: access lasts until {until}, when the subscription ends"
    return f"Subscription extended by {by}: the next payment is due on {until}"
