"""The customer portal: a signed, expiring token per payment lets the customer ask for a refund and follow it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Request

from refundflow_intake import portal_tokens, rate_limit, refund_requests, repository
from refundflow_intake import refund_policy_repository as policies
from refundflow_intake.api.dependencies import Credentials, CurrentCaller, Db, Now
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import PathId
from refundflow_intake.api.portal_schemas import (
    PortalRefundRequest,
    PortalRefundRequestCreate,
    PortalToken,
    PortalTokenCreate,
)
from refundflow_intake.domain import (
    Channel,
    OpenRequestExists,
    PaymentIsDisputed,
    PaymentNotFound,
    ProviderPaymentConflict,
    ReasonDetailsRequired,
    RefundExceedsRefundable,
    RefundNotFound,
    RefundStatus,
)
from refundflow_intake.portal_tokens import InvalidPortalToken, PortalGrant, PortalTokenExpired
from refundflow_intake.rate_limit import RateLimited
from refundflow_intake.settings import IntakeSettings

router = APIRouter(tags=["portal"])


def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


async def portal_grant(request: Request, credentials: Credentials, now: Now) -> PortalGrant:
    """The payment the customer's portal token opens."""
    if credentials is None:
        raise InvalidPortalToken("a portal token is required: 'Authorization: Bearer pt_...'")
    return portal_tokens.verify(_settings(request).portal_secret(), credentials.credentials, now)


Grant = Annotated[PortalGrant, Depends(portal_grant)]


@router.post("/v1/payments/{payment_id}/portal-token", status_code=201, responses=documented(PaymentNotFound))
async def create_portal_token(
    payment_id: PathId, caller: CurrentCaller, db: Db, now: Now, request: Request, body: PortalTokenCreate | None = None
) -> PortalToken:
    """A token for the customer of this payment: with it they can ask for a refund and follow it."""
    async with db.transaction() as conn:
        if await repository.get_payment(conn, caller.merchant_id, payment_id) is None:
            raise PaymentNotFound(f"no payment {payment_id}")
    settings = _settings(request)
    hours = body.expires_in_hours if body and body.expires_in_hours else settings.portal_token_ttl_hours
    grant = PortalGrant(merchant_id=caller.merchant_id, payment_id=payment_id, expires_at=now + timedelta(hours=hours))
    expires_at = grant.expires_at.replace(microsecond=0)
    token = portal_tokens.issue(settings.portal_secret(), grant)
    return PortalToken(token=token, payment_id=payment_id, expires_at=expires_at)


# What the customer sees: the requests made through the portal or for them by a platform service, never the
# merchant's own (API) refunds; and the merchant's note only when it was written to them, on rejection.
_CUSTOMER_CHANNELS = (Channel.PORTAL.value, Channel.COMMAND.value)


async def _customer_view(conn: asyncpg.Connection, grant: PortalGrant, refund_id: str) -> PortalRefundRequest:
    refund = await repository.get_refund(conn, refund_id, merchant_id=grant.merchant_id)
    if refund is None or refund["payment_id"] != grant.payment_id or refund["channel"] not in _CUSTOMER_CHANNELS:
        raise RefundNotFound(f"no refund request {refund_id}")
    payment = await repository.get_payment(conn, grant.merchant_id, grant.payment_id)
    assert payment is not None
    policy = await policies.effective_policy(conn, grant.merchant_id, payment["product_id"])
    told = refund["decision_note"] if refund["status"] == RefundStatus.REJECTED else None
    return PortalRefundRequest(**refund, message=refund["reason_details"], note=told, process_time=policy.process_time)


_PORTAL_ERRORS = (
    InvalidPortalToken,
    PortalTokenExpired,
    RateLimited,
    PaymentNotFound,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    OpenRequestExists,
    RefundExceedsRefundable,
    ReasonDetailsRequired,
)


@router.post("/v1/portal/refund-requests", status_code=201, responses=documented(*_PORTAL_ERRORS))
async def submit_refund_request(
    body: PortalRefundRequestCreate, grant: Grant, db: Db, now: Now, request: Request
) -> PortalRefundRequest:
    """The customer asks for a refund of the payment the token opens; the merchant decides."""
    await rate_limit.take(
        db.pool,
        f"portal:{grant.payment_id}",
        limit=_settings(request).portal_submissions_per_hour,
        window=timedelta(hours=1),
        now=now,
    )
    async with db.transaction() as conn:
        refund_id = await refund_requests.request_refund(
            conn,
            grant.merchant_id,
            payment_id=grant.payment_id,
            reason=body.reason,
            reason_details=body.message,
            amount=body.amount,
            currency=None,
            actor=None,  # the payment's customer
            now=now,
            channel=Channel.PORTAL,
        )
        return await _customer_view(conn, grant, refund_id)


@router.get(
    "/v1/portal/refund-requests/{refund_id}",
    responses=documented(InvalidPortalToken, PortalTokenExpired, RefundNotFound),
)
async def track_refund_request(refund_id: PathId, grant: Grant, db: Db) -> PortalRefundRequest:
    """Where the customer's request stands."""
    async with db.transaction() as conn:
        return await _customer_view(conn, grant, refund_id)
