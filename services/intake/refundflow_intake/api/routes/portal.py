"""The customer portal: a signed, expiring token per payment lets the customer ask for a refund and follow it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Request, Response

from refundflow_intake import refund_policy_repository as policies
from refundflow_intake import repository
from refundflow_intake.api.dependencies import Credentials, CurrentCaller, Db, Now, ToCustomer
from refundflow_intake.api.errors import documented
from refundflow_intake.api.fields import IdempotencyKey, PathId
from refundflow_intake.api.portal_schemas import (
    PortalRefundRequest,
    PortalRefundRequestCreate,
    PortalToken,
    PortalTokenCreate,
)
from refundflow_intake.domain import (
    AmountNotRepresentable,
    IdempotencyKeyBlank,
    IdempotencyKeyReused,
    OpenRequestExists,
    PaymentIsDisputed,
    PaymentNotFound,
    PortalDisabled,
    ProviderPaymentConflict,
    ReasonDetailsRequired,
    RefundExceedsRefundable,
    RefundNotFound,
    RefundStatus,
)
from refundflow_intake.portal import customer_requests, tokens
from refundflow_intake.portal.customer_requests import Ask
from refundflow_intake.portal.tokens import InvalidPortalToken, PortalGrant, PortalTokenExpired
from refundflow_intake.rate_limit import RateLimited, client_bucket
from refundflow_intake.settings import IntakeSettings
from refundflow_shared.contention_retries import RetriedRoute

router = APIRouter(tags=["portal"], route_class=RetriedRoute)


def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


async def portal_grant(request: Request, credentials: Credentials, now: Now) -> PortalGrant:
    """The payment the customer's portal token opens."""
    if credentials is None:
        raise InvalidPortalToken("a portal token is required: 'Authorization: Bearer pt_...'")
    return tokens.verify(_settings(request).portal_secret(), credentials.credentials, now)


Grant = Annotated[PortalGrant, Depends(portal_grant)]


@router.post(
    "/v1/payments/{payment_id}/portal-token", status_code=201, responses=documented(PaymentNotFound, PortalDisabled)
)
async def create_portal_token(
    payment_id: PathId, caller: CurrentCaller, db: Db, links: ToCustomer, body: PortalTokenCreate | None = None
) -> PortalToken:
    """A link for the customer of this payment (``url``, its page in the portal; ``token`` for the portal's JSON
    API): with it they can ask for a refund and follow it. Customer emails carry a fresh one on their own."""
    async with db.snapshot() as conn:
        if await repository.get_payment(conn, caller.merchant_id, payment_id) is None:
            raise PaymentNotFound(f"no payment {payment_id}")
        if not await customer_requests.portal_enabled(conn, caller.merchant_id):
            raise PortalDisabled("your customer portal is switched off (dashboard Settings): no links are issued")
    ttl = timedelta(hours=body.expires_in_hours) if body and body.expires_in_hours else None
    token, url, expires_at = links.issue(caller.merchant_id, payment_id, ttl)
    return PortalToken(token=token, url=url, payment_id=payment_id, expires_at=expires_at)


async def _customer_view(conn: asyncpg.Connection, grant: PortalGrant, refund_id: str) -> PortalRefundRequest:
    refund = await customer_requests.customer_request(conn, grant, refund_id)
    payment = await repository.get_payment(conn, grant.merchant_id, grant.payment_id)
    assert payment is not None
    policy = await policies.effective_policy(conn, grant.merchant_id, payment["product_id"])
    # Only what a decision told the customer: an approval's team note, or a cancel-only's, stays with the team.
    told = refund["customer_note"] if refund["status"] != RefundStatus.PENDING else None
    return PortalRefundRequest(**refund, message=refund["reason_details"], note=told, process_time=policy.process_time)


_PORTAL_ERRORS = (
    InvalidPortalToken,
    PortalTokenExpired,
    RateLimited,
    PaymentNotFound,
    PortalDisabled,
    PaymentIsDisputed,
    ProviderPaymentConflict,
    OpenRequestExists,
    RefundExceedsRefundable,
    AmountNotRepresentable,
    IdempotencyKeyReused,
    IdempotencyKeyBlank,
    ReasonDetailsRequired,
)


@router.post("/v1/portal/refund-requests", status_code=201, responses=documented(*_PORTAL_ERRORS))
async def submit_refund_request(
    body: PortalRefundRequestCreate,
    grant: Grant,
    db: Db,
    now: Now,
    links: ToCustomer,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> PortalRefundRequest:
    """The customer asks for a refund of the payment the token opens; the merchant decides."""
    ask = Ask(body.reason, body.message, body.amount, body.cancel_subscription)
    settings, client = _settings(request), client_bucket(request)
    refund_id, replayed = await customer_requests.submit_request(
        db, grant, ask, settings=settings, links=links, client=client, now=now, form_key=idempotency_key
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    async with db.snapshot() as conn:
        return await _customer_view(conn, grant, refund_id)


@router.get(
    "/v1/portal/refund-requests/{refund_id}",
    responses=documented(InvalidPortalToken, PortalTokenExpired, RefundNotFound),
)
async def track_refund_request(refund_id: PathId, grant: Grant, db: Db) -> PortalRefundRequest:
    """Where the customer's request stands."""
    async with db.snapshot() as conn:
        return await _customer_view(conn, grant, refund_id)
