"""`make migrate`: apply every service's migrations (to DATABASE_URL, else the dev stack's database)."""

from __future__ import annotations

import asyncio
import os

from refundflow_devstack.dev import VAR
from refundflow_devstack.local_postgres import LocalPostgres
from refundflow_devstack.service_migrations import migrate_all


def main() -> None:
    dsn = os.environ.get("DATABASE_URL")
    local = None
    if dsn is None:
        local = LocalPostgres(VAR / "postgres", port=int(os.environ.get("REFUNDFLOW_PG_PORT", "5432")))
        dsn = local.start()
    try:
        applied = asyncio.run(migrate_all(dsn))
        print("\n".join(applied) if applied else "everything is up to date")
    finally:
        if local is not None:
            local.stop()
