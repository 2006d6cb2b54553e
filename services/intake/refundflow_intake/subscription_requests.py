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
) -> None:
    """Cancel without any refund (the customer keeps access until the period ends when ``at_period_end``)."""
    payment = await repository.get_payment(conn, merchant_id, payment_id)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    if payment["subscription_id"] is None:
        raise NotASubscription(f"payment {payment['id']} is not for a subscription")
    customer = to_customer(links, payment)
    await request_cancel(
        conn, payment, customer, refund_id=None, at_period_end=at_period_end, actor=actor, note_to_customer=None
    )


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
) -> None:
    if not at_period_end:
        await repository.record_cancel_requested(conn, payment["id"])
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
            **customer,
        ),
        source=INTAKE.source,
    )


async def grant_extension(
    conn: asyncpg.Connection, payment: Row, customer: Row, *, refund_id: str, days: int, actor: str
) -> None:
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
            **customer,
        ),
        source=INTAKE.source,
    )
