"""The payment provider's webhook endpoint: pending refunds' verdicts, reversals, external refunds' changes."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from refundflow_processor.attempts import AttemptPolicy
from refundflow_processor.payment_provider import ProviderUnavailable
from refundflow_processor.provider_updates import RefundInFlight, apply_provider_update
from refundflow_processor.settings import ProcessorSettings
from refundflow_processor.stripe_provider import InvalidWebhook, refund_from_webhook
from refundflow_shared.contention_retries import DatabaseBusy, RetriedRoute

log = structlog.get_logger(__name__)

# What the route may answer besides 200, by status: the codes an operator reads in Stripe's delivery log.
_REFUSALS = {
    400: ("invalid_webhook_signature", "malformed_webhook"),
    409: ("refund_in_flight",),
    503: ("webhooks_not_configured", DatabaseBusy.code),
}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable: what went wrong")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _documented_refusals() -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` naming every error code the route answers, grouped by status (as intake's API)."""
    return {
        status: {
            "model": ErrorBody,
            "description": "error codes: " + ", ".join(f"`{code}`" for code in codes),
            "content": {"application/json": {"example": {"error": {"code": codes[0], "message": "why, in words"}}}},
        }
        for status, codes in _REFUSALS.items()
    }


def provider_webhook_router(settings: ProcessorSettings) -> APIRouter:
    # One transaction a request: run again whole after contention, else 503 database_busy.
    router = APIRouter(tags=["provider webhooks"], route_class=RetriedRoute)
    policy = AttemptPolicy.from_settings(settings)

    @router.post("/v1/provider-webhooks/stripe", responses=_documented_refusals())
    async def stripe_webhook(request: Request) -> JSONResponse:
        """Stripe's refund.updated / refund.failed / charge.refund.updated, verified with the endpoint's secret
        (STRIPE_WEBHOOK_SECRET): a Stripe webhook endpoint subscribed to these three event types points here.

        400 `invalid_webhook_signature` (the Stripe-Signature does not verify), 400 `malformed_webhook` (signed, but
        its refund cannot be read), 409 `refund_in_flight` (our refund whose call is still unanswered: Stripe
        delivers it again), 503 `webhooks_not_configured` (STRIPE_WEBHOOK_SECRET unset: pending refunds are then
        finished by the sync job only), 503 `database_busy` (its transaction met others' on every try: Stripe
        delivers it again)."""
        if settings.stripe_webhook_secret is None:
            return _error(503, "webhooks_not_configured", "STRIPE_WEBHOOK_SECRET is not set")
        try:
            refund = refund_from_webhook(
                await request.body(),
                request.headers.get("stripe-signature"),
                settings.stripe_webhook_secret.get_secret_value(),
            )
        except InvalidWebhook as exc:
            log.warning("provider_webhook_rejected", error=str(exc))
            return _error(400, "invalid_webhook_signature", "the Stripe-Signature does not verify")
        except ProviderUnavailable as exc:  # signed, but its refund cannot be read: no retry will make it readable
            log.warning("provider_webhook_malformed", error=str(exc))
            return _error(400, "malformed_webhook", str(exc))
        if refund is None:
            return JSONResponse({"received": True, "handled": False})
        try:
            async with request.app.state.runtime.pool.acquire() as conn, conn.transaction():
                recorded = await apply_provider_update(conn, refund, policy=policy, provider="stripe")
        except RefundInFlight as exc:
            # Stripe delivers again only what was not answered 2xx: by then the executor has recorded the refund.
            log.info("provider_webhook_deferred", provider_refund_id=refund.id, status=refund.status, why=str(exc))
            return _error(409, "refund_in_flight", f"{exc}; deliver the event again later")
        log.info("provider_webhook_received", provider_refund_id=refund.id, status=refund.status, recorded=recorded)
        return JSONResponse({"received": True, "handled": recorded})

    return router


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
