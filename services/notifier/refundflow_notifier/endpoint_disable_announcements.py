"""Announcing to intake the endpoints the notifier disabled before it announced disables (migration 0861 marks
them): intake showed them enabled, with nothing to say why their webhooks stopped."""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_shared.event_contract import NOTIFIER
from refundflow_shared.events import WebhookEndpointDisabled
from refundflow_shared.outbox import add_events

log = structlog.get_logger(__name__)


async def announce_earlier_disables(pool: asyncpg.Pool) -> int:
    """Stage ``webhook_endpoint.disabled`` for each marked endpoint and unmark it, in one transaction (once, however
    many replicas start together); returns how many. Intake takes one only for the version it disabled."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, merchant_id, disabled_reason, version FROM webhook_endpoints"
            " WHERE disable_unannounced ORDER BY id FOR UPDATE"
        )
        disabled = [
            WebhookEndpointDisabled(
                merchant_id=row["merchant_id"],
                endpoint_id=row["id"],
                reason=row["disabled_reason"],
                version=row["version"],
            )
            for row in rows
        ]
        await add_events(conn, disabled, source=NOTIFIER.source)
        await conn.execute(
            "UPDATE webhook_endpoints SET disable_unannounced = false WHERE id = ANY($1::text[])",
            [r["id"] for r in rows],
        )
    if rows:
        log.info("earlier_endpoint_disables_announced", endpoints=len(rows))
    return len(rows)
