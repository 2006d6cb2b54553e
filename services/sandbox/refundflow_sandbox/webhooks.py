"""Signed refund webhooks, as Stripe sends them, for refunds whose status changed (settled or failed)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import httpx
import structlog

from refundflow_sandbox.refunds import RefundLedger, new_id
from refundflow_sandbox.stripe_objects import refund_object

log = structlog.get_logger(__name__)


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" with the endpoint secret>``."""
    signed = f"{timestamp}.".encode() + payload
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


async def send_refund_updates(ledger: RefundLedger, url: str, secret: str, interval: float = 0.5) -> None:
    """Forever: post the webhooks of each refund whose status changed; a few tries each, then give up loudly."""
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            for update in ledger.take_updates():
                for event_type in update.event_types:
                    event = {
                        "id": new_id("evt_"),
                        "object": "event",
                        "type": event_type,
                        "created": int(time.time()),
                        "livemode": False,
                        "data": {"object": refund_object(update.refund)},
                    }
                    await _deliver(client, url, secret, json.dumps(event).encode(), update.refund.id)
            await asyncio.sleep(interval)


async def _deliver(client: httpx.AsyncClient, url: str, secret: str, payload: bytes, refund_id: str) -> None:
    for attempt in range(1, 4):
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(payload, secret, int(time.time())),
        }
        try:
            response = await client.post(url, content=payload, headers=headers)
            if response.is_success:
                log.info("webhook_delivered", refund_id=refund_id, status=response.status_code)
                return
            log.warning("webhook_refused", refund_id=refund_id, status=response.status_code, attempt=attempt)
        except httpx.HTTPError as exc:
            log.warning("webhook_failed", refund_id=refund_id, error=repr(exc), attempt=attempt)
        await asyncio.sleep(attempt)
    log.error("webhook_given_up", refund_id=refund_id)
