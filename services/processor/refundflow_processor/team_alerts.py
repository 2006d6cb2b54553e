"""Team alerts the processor raises (``team_alert.raised``), staged in the caller's transaction.

Kinds: ``refund_outcome_unknown``, ``provider_answer_mismatch``, ``provider_auth_failed``, ``provider_not_executing``,
``subscription_cancel_failed``, ``subscription_extension_failed``, ``external_refund_unattributed``,
``unrecorded_provider_refund``, ``duplicate_refund``, ``provider_refund_of_another_payment``, and the
refusals of an approval (``provider_payment_mismatch``, ``currency_mismatch``, ``exceeds_refundable``).
"""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_processor.provider_pause import CallKind
from refundflow_shared.event_contract import PROCESSOR
from refundflow_shared.events import NOTE_MAX_LENGTH, TeamAlertRaised
from refundflow_shared.outbox import add_event

log = structlog.get_logger(__name__)


async def raise_alert(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    kind: str,
    title: str,
    details: dict[str, str],
    payment_id: str | None = None,
    refund_id: str | None = None,
) -> None:
    await add_event(
        conn,
        TeamAlertRaised(
            merchant_id=merchant_id,
            kind=kind,
            title=title[:200],
            details={key: value[:NOTE_MAX_LENGTH] for key, value in details.items()},
            payment_id=payment_id,
            refund_id=refund_id,
        ),
        source=PROCESSOR.source,
    )
    log.warning("team_alert_raised", kind=kind, merchant_id=merchant_id)


_WAITING: dict[CallKind, tuple[str, str]] = {
    "refunds": (
        "Refunds are waiting: the payment provider refuses the platform's API key",
        "refunds stay processing and are executed once the key works again; none fails",
    ),
    "subscriptions": (
        "Subscription changes are waiting: the payment provider refuses the platform's API key for subscriptions",
        "cancels and extensions wait and are made once the key may change subscriptions; the customer may be "
        "billed meanwhile",
    ),
}


async def raise_auth_alert_once(conn: asyncpg.Connection, kind: CallKind, merchant_id: str, error: str) -> bool:
    """Tell the merchant's team, once per episode of ``kind``, that its calls of that kind wait on the provider's
    credentials."""
    status = await conn.execute(
        "INSERT INTO provider_auth_alerts (kind, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", kind, merchant_id
    )
    if status != "INSERT 0 1":
        return False
    title, effect = _WAITING[kind]
    await raise_alert(
        conn,
        merchant_id=merchant_id,
        kind="provider_auth_failed",
        title=title,
        details={"error": error, "effect": effect},
    )
    return True


async def end_auth_episode(conn: asyncpg.Connection, kind: CallKind) -> None:
    """The key works again for ``kind``: its next refusal is a new episode, alerted anew."""
    await conn.execute("DELETE FROM provider_auth_alerts WHERE kind = $1", kind)
