"""Every service's schema and migrations folder, for `make migrate` and the dev stack."""

from __future__ import annotations

import refundflow_intake.app
import refundflow_notifier.app
import refundflow_processor.app
from refundflow_shared.migrations_runner import apply_migrations

SCHEMAS = {
    "intake": refundflow_intake.app.MIGRATIONS,
    "processor": refundflow_processor.app.MIGRATIONS,
    "notifier": refundflow_notifier.app.MIGRATIONS,
}


async def migrate_all(dsn: str) -> list[str]:
    applied: list[str] = []
    for schema, folder in SCHEMAS.items():
        applied += [f"{schema}: {v}" for v in await apply_migrations(dsn, schema, folder)]
    return applied
