"""What a customer does through the portal, for its page and its JSON API alike: open the payment a link grants,
ask for a refund (rate-limited per payment and per client address), follow a request. Refund rules are
``refund_requests``'s, the same as for every other door."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from refundflow_intake import idempotency, notification_settings, rate_limit, refund_requests, repository
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Database
from refundflow_intake.domain import (
    CUSTOMER_CHANNELS,
    Channel,
    PaymentNotFound,
    PortalDisabled,
    RefundNotFound,
    RefundReason,
    RefundStatus,
    refundable_amount,
    stated_details,
)
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.portal.tokens import PortalGrant
from refundflow_intake.refund_policy import RefundPolicy
from refundflow_intake.settings import IntakeSettings

Row = dict[str, Any]
# The customer sees the requests made through the portal, or for them by a platform service (CUSTOMER_CHANNELS);
# never the merchant's own (API) refunds.
_SHOWN = 5  # the customer's latest requests on the page


@dataclass(frozen=True)
class Portal:
    """The payment a link opens, as its customer may see it."""

    merchant_id: str
    merchant_name: str
    enabled: bool
    contact: str | None  # the merchant's reply-to address, when it set one
    payment: Row
    policy: RefundPolicy
    refundable: int
    disputed: bool
    subscription_runs: bool  # nothing ends the payment's subscription: no cancel, made or asked, now or at its end
    requests: list[Row]  # the customer's, newest first, each with its ``timeline``

    @property
    def open_request(self) -> Row | None:
        return next((r for r in self.requests if r["status"] == RefundStatus.PENDING), None)


async def merchant_of(conn: asyncpg.Connection, merchant_id: str) -> Row | None:
    row = await conn.fetchrow(
        "SELECT m.id, m.name, m.portal_enabled, s.reply_to FROM merchants m"
        " LEFT JOIN notification_settings s ON s.merchant_id = m.id WHERE m.id = $1",
        merchant_id,
    )
    return dict(row) if row else None


async def open_portal(conn: asyncpg.Connection, grant: PortalGrant) -> Portal:
    """Raises PaymentNotFound when the link names no payment of its merchant."""
    merchant = await merchant_of(conn, grant.merchant_id)
    payment = await repository.get_payment(conn, grant.merchant_id, grant.payment_id)
    if merchant is None or payment is None:
        raise PaymentNotFound("this link opens no payment")
    if payment["subscription_id"] is not None:  # the page shows the subscription as it runs now
        latest = await repository.subscription_period_end(conn, grant.merchant_id, payment["subscription_id"])
        payment = {**payment, "subscription_current_period_end": latest}
    rows = await conn.fetch(
        "SELECT * FROM refunds WHERE payment_id = $1 AND channel = ANY($2::text[])"
        " ORDER BY created_at DESC, id DESC LIMIT $3",
        payment["id"],
        list(CUSTOMER_CHANNELS),
        _SHOWN,
    )
    requests = [{**dict(r), "timeline": await repository.refund_timeline(conn, r["id"])} for r in rows]
    return Portal(
        merchant_id=merchant["id"],
        merchant_name=merchant["name"],
        enabled=merchant["portal_enabled"],
        contact=merchant["reply_to"],
        payment=payment,
        policy=await policies.effective_policy(conn, grant.merchant_id, payment["product_id"]),
        refundable=refundable_amount(payment["amount"], await repository.amount_held_by_refunds(conn, payment["id"])),
        disputed=await repository.is_disputed(conn, payment["id"]),
        subscription_runs=payment["subscription_id"] is not None
        and not await repository.cancel_already_asked(conn, payment, at_period_end=True),
        requests=requests,
    )


async def customer_request(conn: asyncpg.Connection, grant: PortalGrant, refund_id: str) -> Row:
    """One of the customer's requests on the payment the link opens; any other is not found."""
    refund = await repository.get_refund(conn, refund_id, merchant_id=grant.merchant_id)
    if refund is None or refund["payment_id"] != grant.payment_id or refund["channel"] not in CUSTOMER_CHANNELS:
        raise RefundNotFound(f"no refund request {refund_id}")
    return {**refund, "timeline": await repository.refund_timeline(conn, refund_id)}


@dataclass(frozen=True)
class Ask:
    reason: RefundReason
    details: str | None = None
    amount: int | None = None
    cancel_subscription: bool | None = None


async def submit_request(
    db: Database,
    grant: PortalGrant,
    ask: Ask,
    *,
    settings: IntakeSettings,
    links: CustomerLinks,
    client: str,
    now: datetime,
    form_key: str | None = None,
) -> tuple[str, bool]:
    """The customer's request on the payment the link opens; the merchant decides. Returns its id, and whether it
    was made before.

    ``form_key`` is the single-use key of the page's form, or the Idempotency-Key of the portal API's caller: the
    same request sent again (a double click, two tabs, a retry) answers the first request's id."""
    # Refused before any attempt counts; the same rule as every door's (refund_requests.request_refund).
    ask = replace(ask, details=stated_details(ask.reason, ask.details))
    # Scoped to the payment, unambiguously (a payment id may hold ":"): a key is the page's, never another payment's.
    key = f"{len(grant.payment_id)}:{grant.payment_id}:{form_key}" if form_key else None
    request = asdict(ask)
    if key is not None:
        async with db.connection() as conn:
            fingerprint = idempotency.fingerprint(request)
            if earlier := await idempotency.replayed_refund(conn, grant.merchant_id, Channel.PORTAL, key, fingerprint):
                return earlier, True  # the same request again: answered, not counted as another attempt
    hour = timedelta(hours=1)
    per_ip = settings.portal_submissions_per_ip_per_hour
    await rate_limit.take(db.pool, f"portal:ip:{client}", limit=per_ip, window=hour, now=now)
    per_payment = settings.portal_submissions_per_hour
    await rate_limit.take(db.pool, f"portal:{grant.payment_id}", limit=per_payment, window=hour, now=now)
    async with db.transaction() as conn:
        merchant = await merchant_of(conn, grant.merchant_id)
        if merchant is not None and not merchant["portal_enabled"]:
            raise PortalDisabled("this merchant does not take refund requests through the portal")
        return await refund_requests.request_refund_once(
            conn,
            grant.merchant_id,
            key,
            request,
            payment_id=grant.payment_id,
            reason=ask.reason,
            reason_details=ask.details,
            amount=ask.amount,
            currency=None,
            actor=None,  # the payment's customer
            now=now,
            links=links,
            channel=Channel.PORTAL,
            cancel_subscription=ask.cancel_subscription,
        )


async def set_portal_enabled(conn: asyncpg.Connection, merchant_id: str, enabled: bool) -> None:
    await conn.execute("UPDATE merchants SET portal_enabled = $2 WHERE id = $1", merchant_id, enabled)
    await notification_settings.announce_portal_switch(conn, merchant_id, enabled=enabled)


async def portal_enabled(conn: asyncpg.Connection, merchant_id: str) -> bool:
    return bool(await conn.fetchval("SELECT portal_enabled FROM merchants WHERE id = $1", merchant_id))
