"""What a decision asks of a customer's subscription (cancel it, extend its period): events the processor executes at
the provider, each carrying what the customer's email about the outcome needs. Each runs in the caller's
transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from refundflow_intake import repository
from refundflow_intake.domain import NotASubscription, PaymentNotFound
from refundflow_intake.portal.links import CustomerLinks, to_customer
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import SubscriptionCancelRequested, SubscriptionExtensionGranted
from refundflow_shared.outbox import add_event

Row = dict[str, Any]


async def cancel_subscription(
    conn: asyncpg.Connection,
    merchant_id: str,
    payment_id: str,
    *,
    at_period_end: bool,
    actor: str,
    links: CustomerLinks,
    form_key: str | None = None,
) -> bool:
    """Cancel without any refund (the customer keeps access until the period ends when ``at_period_end``). A cancel
    already asked for, this way or one that asks more, or of an ended subscription, asks nothing again: a retried
    call or a double click must not cancel (and tell the customer) twice. One the provider refused counts as asked
    no longer (``subscription.cancel_failed``). ``form_key``, the dashboard form's single-use key, asks once
    however often that form is sent. Returns whether the provider is asked."""
    payment = await repository.get_payment(conn, merchant_id, payment_id, lock=True)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    if payment["subscription_id"] is None:
        raise NotASubscription(f"payment {payment['id']} is not for a subscription")
    if form_key is not None and payment["subscription_cancel_form_key"] == form_key:
        return False
    if await repository.cancel_already_asked(conn, payment, at_period_end=at_period_end):
        return False
    customer = to_customer(links, payment)
    await request_cancel(
        conn, payment, customer, refund_id=None, at_period_end=at_period_end, actor=actor, note_to_customer=None
    )
    if form_key is not None:
        await repository.record_cancel_form_key(conn, payment["id"], form_key)
    return True


async def request_cancel(
    conn: asyncpg.Connection,
    payment: Row,
    customer: Row,
    *,
    refund_id: str | None,
    at_period_end: bool,
    actor: str,
    note_to_customer: str | None,
    after_extension: bool = False,
    no_refund: bool = False,
    channel: str | None = None,
) -> None:
    """Ask the provider to cancel the payment's subscription. ``no_refund``: a cancel-only decision, which the
    customer hears of with the cancellation (its rejection is not mailed); ``channel``: the decision's refund's (the
    customer hears of no refund request they never made)."""
    await repository.record_cancel_requested(conn, payment["id"], at_period_end=at_period_end)
    await add_event(
        conn,
        SubscriptionCancelRequested(
            payment_id=payment["id"],
            merchant_id=payment["merchant_id"],
            subscription_id=payment["subscription_id"],
            at_period_end=at_period_end,
            refund_id=refund_id,
            after_extension=after_extension,
            requested_by=actor,
            customer_email=payment["customer_email"],
            note_to_customer=note_to_customer,
            no_refund=no_refund,
            channel=channel,
            **customer,
        ),
        source=INTAKE.source,
    )


async def grant_extension(
    conn: asyncpg.Connection,
    payment: Row,
    customer: Row,
    *,
    refund_id: str,
    days: int,
    actor: str,
    last_period: bool = False,
) -> None:
    await repository.record_extension_granted(conn, payment["id"], days)
    await add_event(
        conn,
        SubscriptionExtensionGranted(
            payment_id=payment["id"],
            merchant_id=payment["merchant_id"],
            subscription_id=payment["subscription_id"],
            days=days,
            refund_id=refund_id,
            granted_by=actor,
            customer_email=payment["customer_email"],
            last_period=last_period,
            **customer,
        ),
        source=INTAKE.source,
    )
