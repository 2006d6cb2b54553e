"""`refundflow secret-keys`: which key of the WEBHOOK_SECRET_KEYS ring sealed the secrets intake and the notifier
keep, so the operator knows when an old key can be removed (nothing left that only it opens)."""

from __future__ import annotations

from typing import Any

import asyncpg

from refundflow_cli.connections import database
from refundflow_cli.outcomes import ExitCode
from refundflow_cli.output import Output
from refundflow_cli.settings import CliSettings

NO_KEY_ID = "(v1, no key id)"  # a v1 ciphertext opens with whichever key sealed it: any may be that one

# (what, table, its sealed column, which rows count): the copies that are opened to sign or to post.
_OVERLAP = "previous_secret_expires_at > now()"  # a rolled secret's predecessor signs until then
_SEALED = (
    ("intake webhook endpoint secrets", "intake.webhook_endpoints", "encrypted_secret", "deleted_at IS NULL"),
    (
        "intake previous endpoint secrets (rolled)",
        "intake.webhook_endpoints",
        "previous_encrypted_secret",
        f"deleted_at IS NULL AND {_OVERLAP}",
    ),
    ("intake Slack URLs", "intake.notification_settings", "sealed_slack_webhook_url", "true"),
    ("notifier webhook endpoint secrets", "notifier.webhook_endpoints", "encrypted_secret", "NOT deleted"),
    (
        "notifier previous endpoint secrets (rolled)",
        "notifier.webhook_endpoints",
        "previous_encrypted_secret",
        f"NOT deleted AND {_OVERLAP}",
    ),
    ("notifier Slack URLs", "notifier.merchant_settings", "sealed_slack_webhook_url", "true"),
)


async def show_sealed_values(settings: CliSettings, out: Output, *, retiring: str | None) -> ExitCode:
    counts: list[dict[str, Any]] = []
    async with database(settings) as conn:
        for what, table, column, live in _SEALED:
            counts.extend(await _count(conn, what, table, column, live))
    needing = sum(c["count"] for c in counts if c["key_id"] in (retiring, NO_KEY_ID)) if retiring else 0
    if out.json_mode:
        out.document({"sealed": counts, "retiring": retiring, "still_needing_retiring_key": needing})
    else:
        out.table(
            "Sealed secrets by key",
            ["where", "key id", "count"],
            [[c["where"], c["key_id"], c["count"]] for c in counts],
        )
        if retiring and needing:
            out.note(
                f"{needing} still need key {retiring!r}: keep it listed. Intake re-seals under the ring's first key"
                " when it starts (restart it with the new key first), and the notifier takes each once it reads it."
            )
        elif retiring:
            out.note(f"Nothing needs key {retiring!r} any more: remove it from WEBHOOK_SECRET_KEYS.")
    return ExitCode.PROBLEMS_FOUND if needing else ExitCode.OK


async def _count(conn: asyncpg.Connection, what: str, table: str, column: str, live: str) -> list[dict[str, Any]]:
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return []  # that service never started here
    rows = await conn.fetch(
        f"SELECT CASE WHEN split_part({column}, '.', 1) = 'v2' THEN split_part({column}, '.', 2) ELSE $1 END"
        f" AS key_id, count(*) AS count FROM {table} WHERE {column} IS NOT NULL AND {live} GROUP BY 1 ORDER BY 1",
        NO_KEY_ID,
    )
    return [{"where": what, "key_id": r["key_id"], "count": r["count"]} for r in rows]
