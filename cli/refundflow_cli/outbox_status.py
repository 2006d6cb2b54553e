"""`refundflow outbox`: each service's outbox (unsent, parked, the oldest unsent's age), and retrying parked rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from refundflow_cli.connections import database
from refundflow_cli.outcomes import ExitCode, NotFound, UsageProblem
from refundflow_cli.output import Output, age, when
from refundflow_cli.settings import CliSettings
from refundflow_cli.topic_names import SERVICES
from refundflow_shared.outbox import retry_parked

_PARKED_SHOWN = 100


async def show_outboxes(
    settings: CliSettings,
    out: Output,
    *,
    retry: bool,
    event_ids: list[str],
    services: list[str],
    stale_after: timedelta,
) -> ExitCode:
    if event_ids and not retry:
        raise UsageProblem("--event-id chooses what --retry-parked retries: add --retry-parked")
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise UsageProblem(f"no service {', '.join(unknown)}; the services are {', '.join(SERVICES)}")
    ids = [_uuid(text) for text in event_ids]
    chosen = services or list(SERVICES)
    report: list[dict[str, Any]] = []
    async with database(settings) as conn:
        for schema in chosen:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.outbox"):
                report.append({"service": schema, "present": False})
                continue
            entry: dict[str, Any] = {"service": schema, "present": True}
            if retry:
                entry["retried"] = await _retry(conn, schema, ids)
            entry |= await _status(conn, schema)
            report.append(entry)
    if ids and sum(e.get("retried", 0) for e in report) == 0:
        raise NotFound("none of those events is parked in " + ", ".join(chosen))
    return _show(out, report, stale_after)


async def _retry(conn: asyncpg.Connection, schema: str, ids: list[uuid.UUID]) -> int:
    """Put the parked rows back in line (all, or those of ``ids``), and wake the service's relay."""
    async with conn.transaction():
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        if not ids:
            ids = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM outbox WHERE parked_at IS NOT NULL")]
        retried = await retry_parked(conn, ids) if ids else 0
        if retried:
            await conn.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")
    return retried


async def _status(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    # Each count reads one of the outbox's partial indexes (unsent, parked), never the sent rows.
    unsent = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL AND parked_at IS NULL")
    oldest = await conn.fetchrow(
        f"SELECT created_at, extract(epoch FROM now() - created_at)::float8 AS age FROM {schema}.outbox"
        " WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT 1"
    )
    parked_count = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE parked_at IS NOT NULL")
    parked = await conn.fetch(
        f"SELECT event_id, event_type, partition_key, attempts, last_error, created_at, parked_at FROM {schema}.outbox"
        f" WHERE parked_at IS NOT NULL ORDER BY parked_at, id LIMIT {_PARKED_SHOWN}"
    )
    return {
        "unsent": unsent,
        "oldest_unsent_at": oldest["created_at"] if oldest else None,
        "oldest_unsent_seconds": oldest["age"] if oldest else None,
        "parked": parked_count,
        "parked_events": [dict(r) for r in parked],
    }


def _show(out: Output, report: list[dict[str, Any]], stale_after: timedelta) -> ExitCode:
    parked = sum(e.get("parked", 0) for e in report)
    limit = stale_after.total_seconds()
    stale = [e["service"] for e in report if (e.get("oldest_unsent_seconds") or 0) > limit]
    if out.json_mode:
        out.document({"outboxes": report, "parked": parked, "stale": stale, "stale_after_seconds": limit})
    else:
        out.table(
            "Outboxes",
            ["service", "unsent", "oldest unsent", "parked", "retried"],
            [
                [e["service"], e["unsent"], age(e["oldest_unsent_seconds"]), e["parked"], e.get("retried", "")]
                if e["present"]
                else [e["service"], "no outbox (never started)", "", "", ""]
                for e in report
            ],
        )
        rows = [
            [
                e["service"],
                p["event_id"],
                p["event_type"],
                p["partition_key"],
                p["attempts"],
                when(p["parked_at"]),
                p["last_error"],
            ]
            for e in report
            for p in e.get("parked_events", [])
        ]
        if rows:
            out.table("Parked events", ["service", "event id", "type", "key", "attempts", "parked at", "error"], rows)
            out.note("Fix what made the broker refuse them, then: refundflow outbox --retry-parked [--event-id ID]")
        for service in stale:
            out.note(f"{service}: events wait longer than {age(limit)}: is its relay running, is the broker up?")
    return ExitCode.PROBLEMS_FOUND if parked or stale else ExitCode.OK


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise UsageProblem(f"{text!r} is not an event id (a UUID)") from None
