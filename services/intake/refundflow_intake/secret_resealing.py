"""Re-seals what intake sealed under an older key of the ``WEBHOOK_SECRET_KEYS`` ring, so that key can be removed.

Endpoint signing secrets and Slack URLs are sealed once, when saved, and the notifier keeps the ciphertext it was
sent. So each value not sealed under the ring's first key is sealed again under it and announced again (a new
version, through the outbox, in the same transaction): once the notifier has applied it, neither copy needs the
older key. Runs at start-up in batches; ``refundflow secret-keys`` counts what still needs a key.
"""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_intake import notification_settings, webhook_endpoints
from refundflow_shared.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger(__name__)

BATCH_SIZE = 200  # values per transaction: short row locks, while a merchant may be saving the same rows


async def reseal_under_primary_key(pool: asyncpg.Pool, box: SecretBox | None, *, batch_size: int = BATCH_SIZE) -> int:
    """Seal every live endpoint secret and Slack URL sealed under another key again under the primary key, and
    announce each; returns how many. One that no key of the ring opens is logged and left as it is."""
    if box is None:
        return 0
    resealed = await _reseal_endpoint_secrets(pool, box, batch_size) + await _reseal_slack_urls(pool, box, batch_size)
    if resealed:
        log.info("sealed_values_resealed", count=resealed, key_id=box.primary_kid)
    return resealed


def _primary_prefix(box: SecretBox) -> str:
    return f"v2.{box.primary_kid}."


async def _reseal_endpoint_secrets(pool: asyncpg.Pool, box: SecretBox, batch_size: int) -> int:
    """Each live endpoint's signing secret, and its previous one while it still signs (after a roll)."""
    resealed, after = 0, ""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, merchant_id, encrypted_secret, CASE WHEN previous_secret_expires_at > now()"
                " THEN previous_encrypted_secret END AS previous FROM webhook_endpoints"
                " WHERE id > $1 AND deleted_at IS NULL AND (NOT starts_with(encrypted_secret, $2)"
                " OR (previous_secret_expires_at > now() AND NOT starts_with(previous_encrypted_secret, $2)))"
                " ORDER BY id LIMIT $3 FOR UPDATE",
                after,
                _primary_prefix(box),
                batch_size,
            )
            for row in rows:
                endpoint_id = row["id"]
                current = _sealed_again(box, row["encrypted_secret"], context=endpoint_id, what="webhook_endpoint")
                previous = None
                if row["previous"] is not None:
                    previous = _sealed_again(box, row["previous"], context=endpoint_id, what="previous_secret")
                    if previous is None:
                        continue  # left as it is, both: the previous one would stop signing before its time
                if current is not None:
                    await webhook_endpoints.replace_sealed_secret(
                        conn, row["merchant_id"], endpoint_id, current, previous
                    )
                    resealed += 1
        if len(rows) < batch_size:
            return resealed
        after = rows[-1]["id"]


async def _reseal_slack_urls(pool: asyncpg.Pool, box: SecretBox, batch_size: int) -> int:
    resealed, after = 0, ""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            batch = await conn.fetch(
                "SELECT merchant_id FROM notification_settings"
                " WHERE merchant_id > $1 AND NOT starts_with(sealed_slack_webhook_url, $2)"
                " ORDER BY merchant_id LIMIT $3",
                after,
                _primary_prefix(box),
                batch_size,
            )
            merchant_ids = [r["merchant_id"] for r in batch]
            # The merchants' rows first, then their settings', as a settings save and a portal switch take them.
            await conn.execute("SELECT FROM merchants WHERE id = ANY($1) ORDER BY id FOR UPDATE", merchant_ids)
            rows = await conn.fetch(
                "SELECT merchant_id, sealed_slack_webhook_url FROM notification_settings"
                " WHERE merchant_id = ANY($1) AND NOT starts_with(sealed_slack_webhook_url, $2)"
                " ORDER BY merchant_id FOR UPDATE",
                merchant_ids,
                _primary_prefix(box),
            )
            for row in rows:
                merchant_id = row["merchant_id"]
                sealed = _sealed_again(box, row["sealed_slack_webhook_url"], context=merchant_id, what="slack_url")
                if sealed is not None:
                    await notification_settings.replace_sealed_slack_url(conn, merchant_id, sealed)
                    resealed += 1
        if len(batch) < batch_size:
            return resealed
        after = merchant_ids[-1]


def _sealed_again(box: SecretBox, ciphertext: str, *, context: str, what: str) -> str | None:
    if ciphertext.startswith(_primary_prefix(box)):
        return ciphertext  # sealed under the primary key already (the other value of its row was not)
    try:
        return box.seal(box.open(ciphertext, context=context), context=context)
    except SecretBoxError as exc:
        # Sealed under a key already removed: nothing here can open it; `refundflow secret-keys` shows it.
        log.error("sealed_value_unreadable", what=what, context=context, error=str(exc))
        return None
