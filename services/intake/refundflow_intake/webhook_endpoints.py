"""Merchants' webhook endpoints and team channels: stored here, announced to the notifier as events.

Each change writes the row and a full-state event in one transaction (outbox), so the notifier always ends
up with what the merchant last saw answered, even if it was down at the time. The endpoint's signing secret
is generated here, returned once, and travels only encrypted (``SecretBox``, bound to the endpoint id).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import asyncpg

from refundflow_intake.domain import NotFound
from refundflow_shared.events import NotificationSettingsConfigured, WebhookEndpointConfigured
from refundflow_shared.outbox import add_event
from refundflow_shared.secret_box import SecretBox

SOURCE = "refundflow/intake"
Row = dict[str, Any]

_ENDPOINT_COLUMNS = "id, url, event_types, enabled, created_at, updated_at"
_SETTINGS_FIELDS = (
    "team_email", "slack_webhook_url", "sender_name", "reply_to", "review_target", "refund_process_time"
)  # fmt: skip


class WebhookEndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class WebhookDeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


async def create_endpoint(
    conn: asyncpg.Connection, box: SecretBox, merchant_id: str, *, url: str, event_types: list[str], secret: str
) -> Row:
    endpoint_id = f"we_{uuid.uuid4().hex}"
    row = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, event_types, encrypted_secret)"
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_ENDPOINT_COLUMNS}, encrypted_secret, version",
        endpoint_id,
        merchant_id,
        url,
        event_types,
        box.seal(secret, context=endpoint_id),
    )
    assert row is not None
    await _announce_endpoint(conn, merchant_id, dict(row))
    return dict(row)


async def update_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, changes: Row) -> Row:
    """Apply the given fields; re-enabling an endpoint the notifier disabled also clears its failure count."""
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), event_types = coalesce($4, event_types),"
        " enabled = coalesce($5, enabled), version = version + 1, updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        f" RETURNING {_ENDPOINT_COLUMNS}, encrypted_secret, version",
        endpoint_id,
        merchant_id,
        changes.get("url"),
        changes.get("event_types"),
        changes.get("enabled"),
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    await _announce_endpoint(conn, merchant_id, dict(row))
    return dict(row)


async def delete_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> None:
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, version = version + 1, updated_at = now()"
        " WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        f" RETURNING {_ENDPOINT_COLUMNS}, encrypted_secret, version",
        endpoint_id,
        merchant_id,
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    await _announce_endpoint(conn, merchant_id, dict(row), deleted=True)


async def get_endpoint(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str) -> Row:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL",
        endpoint_id,
        merchant_id,
    )
    if row is None:
        raise WebhookEndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return dict(row)


async def list_endpoints(conn: asyncpg.Connection, merchant_id: str) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at, id",
        merchant_id,
    )
    return [dict(r) for r in rows]


async def _announce_endpoint(conn: asyncpg.Connection, merchant_id: str, row: Row, *, deleted: bool = False) -> None:
    await add_event(
        conn,
        WebhookEndpointConfigured(
            merchant_id=merchant_id,
            endpoint_id=row["id"],
            url=row["url"],
            event_types=list(row["event_types"]),
            enabled=row["enabled"],
            deleted=deleted,
            encrypted_secret=row["encrypted_secret"],
            version=row["version"],
        ),
        source=SOURCE,
    )


async def save_settings(conn: asyncpg.Connection, merchant_id: str, settings: Row) -> Row:
    """Replace the merchant's notification settings (PUT semantics) and tell the notifier."""
    values = [settings.get(name) for name in _SETTINGS_FIELDS]
    row = await conn.fetchrow(
        f"INSERT INTO notification_settings (merchant_id, {', '.join(_SETTINGS_FIELDS)})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (merchant_id) DO UPDATE SET "
        + ", ".join(f"{name} = EXCLUDED.{name}" for name in _SETTINGS_FIELDS)
        + ", updated_at = now() RETURNING *",
        merchant_id,
        *values,
    )
    assert row is not None
    await add_event(
        conn,
        NotificationSettingsConfigured(merchant_id=merchant_id, **dict(zip(_SETTINGS_FIELDS, values, strict=True))),
        source=SOURCE,
    )
    return dict(row)


async def get_settings(conn: asyncpg.Connection, merchant_id: str) -> Row:
    row = await conn.fetchrow("SELECT * FROM notification_settings WHERE merchant_id = $1", merchant_id)
    return dict(row) if row else {name: None for name in _SETTINGS_FIELDS}


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
