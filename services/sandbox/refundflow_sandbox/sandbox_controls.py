"""``/v1/_sandbox/...``: what tests see and steer behind the provider's back. No auth, never in Stripe."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from refundflow_sandbox.routes import SandboxDep
from refundflow_sandbox.scenarios import FAILURE_REASONS
from refundflow_sandbox.stripe_errors import invalid_request
from refundflow_sandbox.stripe_objects import refund_object

control_router = APIRouter(prefix="/v1/_sandbox")


@control_router.get("/refunds")
async def sandbox_refunds(sandbox: SandboxDep, payment_intent: str | None = None) -> dict[str, Any]:
    """Every refund the provider holds (optionally for one payment intent)."""
    refunds = sandbox.ledger.list_refunds(payment_intent=payment_intent)
    return {"count": len(refunds), "data": [refund_object(r) for r in refunds]}


@control_router.post("/refunds/{refund_id}/settle")
async def settle_refund(refund_id: str, sandbox: SandboxDep) -> dict[str, Any]:
    """A pending refund succeeds now; its ``refund.updated`` webhook follows."""
    return refund_object(sandbox.ledger.settle(refund_id))


@control_router.post("/refunds/{refund_id}/fail")
async def fail_refund(
    refund_id: str, sandbox: SandboxDep, failure_reason: str = "expired_or_canceled_card"
) -> dict[str, Any]:
    """A pending or succeeded refund fails now (the money goes back on the charge); ``refund.failed`` and
    ``charge.refund.updated`` webhooks follow."""
    if failure_reason not in FAILURE_REASONS:
        raise invalid_request(f"Unknown failure_reason: {failure_reason}", param="failure_reason")
    return refund_object(sandbox.ledger.fail(refund_id, failure_reason))


@control_router.post("/api_keys/{api_key}/revoke")
async def revoke_api_key(api_key: str, sandbox: SandboxDep) -> dict[str, object]:
    """From now on the key is answered 401 ``api_key_expired`` (a rolled key)."""
    sandbox.api_keys.revoke(api_key)
    return sandbox.api_keys.status(api_key)


@control_router.post("/api_keys/{api_key}/restore")
async def restore_api_key(api_key: str, sandbox: SandboxDep) -> dict[str, object]:
    sandbox.api_keys.restore(api_key)
    return sandbox.api_keys.status(api_key)


@control_router.get("/api_keys/{api_key}")
async def api_key_status(api_key: str, sandbox: SandboxDep) -> dict[str, object]:
    """Whether the key is revoked, and how many requests with it were refused."""
    return sandbox.api_keys.status(api_key)
