"""Refunds found at the provider that Refundflow did not make: attributed to one payment, or to none.

A refund is booked (``refund.external_detected``) only when exactly one known payment carries its provider
payment and the currencies agree; anything else alerts and books nothing (security review, finding 1).
Every later status change of a booked one is published again, with the same provider refund id.
"""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_processor import payment_repository
from refundflow_processor.payment_provider import ProviderRefund
from refundflow_processor.records import ExternalRefund, Payment
from refundflow_processor.team_alerts import raise_alert
from refundflow_shared.event_contract import PROCESSOR
from refundflow_shared.events import EXTERNAL_REFUND_MOVES, RefundExternalDetected
from refundflow_shared.money import CURRENCY_EXPONENTS, format_amount
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)


def owner_of(candidates: list[Payment], reported: ProviderRefund) -> Payment | None:
    """The one payment a refund on a provider payment can be booked against, if it can be proven."""
    if len(candidates) != 1:
        return None
    [payment] = candidates
    return payment if reported.currency == payment.currency and reported.amount <= payment.amount else None


async def record_external(conn: asyncpg.Connection, scanned: Payment, reported: ProviderRefund) -> bool:
    """A refund on ``scanned``'s provider payment that is not ours; True if an event was published."""
    known = await payment_repository.lock_external_refund(conn, reported.id)
    if known is not None:
        return await _record_status_change(conn, known, reported)
    candidates = await payment_repository.payments_with_provider_id(conn, scanned.provider_payment_id)
    owner = owner_of(candidates, reported)
    if owner is not None:
        await payment_repository.lock_payment(conn, owner.payment_id)  # refunds are capped under this lock
    booked = ExternalRefund(
        provider_refund_id=reported.id,
        payment_id=(owner or scanned).payment_id,
        amount=reported.amount,
        currency=reported.currency,
        status=reported.status,
        attributed=owner is not None,
    )
    if not await payment_repository.insert_external_refund(conn, booked):
        return False
    if owner is None:
        log.error(
            "external_refund_unattributed",
            provider_refund_id=reported.id,
            payments=len(candidates),
            currency=reported.currency,
        )
        await alert_about_provider_refund(
            conn,
            scanned,
            reported,
            kind="external_refund_unattributed",
            title="A refund made outside Refundflow cannot be attributed to this payment; nothing was booked",
            payment=format_amount(scanned.amount, scanned.currency),
        )
        return False
    log.warning("external_refund_detected", provider_refund_id=reported.id, ours=reported.refund_id is not None)
    await _publish(conn, owner, reported)
    return True


async def record_external_update(conn: asyncpg.Connection, reported: ProviderRefund) -> bool:
    """A status report (webhook, poll) about a refund we may know as external; True if one was published."""
    known = await payment_repository.lock_external_refund(conn, reported.id)
    return known is not None and await _record_status_change(conn, known, reported)


async def _record_status_change(conn: asyncpg.Connection, known: ExternalRefund, reported: ProviderRefund) -> bool:
    if not known.attributed or (known.status, reported.status) not in EXTERNAL_REFUND_MOVES:
        return False
    payment = await payment_repository.lock_payment(conn, known.payment_id)
    if payment is None:
        return False
    await payment_repository.record_external_refund_status(conn, known.provider_refund_id, reported.status)
    log.warning("external_refund_changed", provider_refund_id=known.provider_refund_id, status=reported.status)
    await _publish(conn, payment, ProviderRefund(known.provider_refund_id, reported.status, known.amount))
    return True


async def _publish(conn: asyncpg.Connection, payment: Payment, refund: ProviderRefund) -> None:
    await add_event(
        conn,
        RefundExternalDetected(
            payment_id=payment.payment_id,
            merchant_id=payment.merchant_id,
            amount=refund.amount,
            currency=payment.currency,
            provider_refund_id=refund.id,
            provider_payment_id=payment.provider_payment_id,
            status=refund.status,
        ),
        source=PROCESSOR.source,
    )


async def alert_about_provider_refund(
    conn: asyncpg.Connection,
    payment: Payment,
    reported: ProviderRefund,
    /,
    *,
    kind: str,
    title: str,
    refund_id: str | None = None,
    **more: str,
) -> None:
    """Tell the payment's team about a refund the provider listed that the sync job could not simply book: which
    refund, of which provider payment, and ``more``."""
    await raise_alert(
        conn,
        merchant_id=payment.merchant_id,
        kind=kind,
        title=title,
        details={
            "provider_refund_id": reported.id,
            "provider_payment_id": payment.provider_payment_id,
            "refund": _as_read(reported),
            **more,
        },
        payment_id=payment.payment_id,
        refund_id=refund_id,
    )


def _as_read(reported: ProviderRefund) -> str:
    """The provider's refund amount as people read it; in minor units when its currency is not one we know."""
    if reported.currency in CURRENCY_EXPONENTS:
        return format_amount(reported.amount, reported.currency)
    return f"{reported.amount} minor units of {reported.currency or 'a currency the provider did not say'}"
