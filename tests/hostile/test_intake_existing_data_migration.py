"""Data written before the hardening: the migrations make it safe instead of failing or trusting it."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from refundflow_intake.app import MIGRATIONS
from refundflow_shared.migrations_runner import apply_migrations
from tests.conftest import create_database
from tests.support.intake_harness import running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
FIRST_HARDENING_MIGRATION = "0300"


async def _database_before_the_hardening(postgres_url: str, tmp_path: Path) -> str:
    dsn = await create_database(postgres_url)
    old = tmp_path / "old-migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < FIRST_HARDENING_MIGRATION:
            shutil.copy(path, old / path.name)
    await apply_migrations(dsn, "intake", old)
    return dsn


async def _old_data(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    try:
        for merchant, key in (("mer_first", "rfk_first"), ("mer_second", "rfk_second")):
            await conn.execute("INSERT INTO merchants (id, name) VALUES ($1, $1)", merchant)
            await conn.execute(
                "INSERT INTO api_keys (id, merchant_id, key_hash) VALUES ($1, $2, $3)",
                f"key_{merchant}",
                merchant,
                hashlib.sha256(key.encode()).digest(),
            )
        # Both merchants registered the same provider payment (the old rule allowed it); the first one first.
        for payment, merchant, age in (
            ("pay_first", "mer_first", timedelta(days=2)),
            ("pay_second", "mer_second", timedelta(days=1)),
        ):
            await conn.execute(
                "INSERT INTO payments (id, merchant_id, customer_email, amount, currency, provider_payment_id,"
                " paid_at, product_id, product_name, product_kind, created_at)"
                " VALUES ($1, $2, 'ada@example.com', 10000, 'EUR', 'pi_shared', now(), 'p', 'P', 'one_time',"
                " now() - $3::interval)",
                payment,
                merchant,
                age,
            )
            await conn.execute(
                "INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id)"
                " VALUES ($1, 'EUR', 10000, 'payment', $2)",
                merchant,
                payment,
            )
        for refund, payment, merchant, amount, status in (
            ("ref_processing", "pay_first", "mer_first", 3000, "processing"),
            ("ref_pending", "pay_second", "mer_second", 1000, "pending"),
        ):
            await conn.execute(
                "INSERT INTO refunds (id, merchant_id, payment_id, amount, requested_amount, currency, reason, status)"
                " VALUES ($1, $2, $3, $4, $4, 'EUR', 'duplicate', $5)",
                refund,
                merchant,
                payment,
                amount,
                status,
            )
        await conn.execute("INSERT INTO refund_approvals (refund_id, actor) VALUES ('ref_pending', 'api_key:x')")
        await conn.execute(
            "INSERT INTO external_refunds (provider_refund_id, payment_id, merchant_id, amount, currency, status)"
            " VALUES ('re_dashboard', 'pay_first', 'mer_first', 500, 'EUR', 'pending')"
        )
        await conn.execute(
            "INSERT INTO notification_settings (merchant_id, slack_webhook_url)"
            " VALUES ('mer_first', 'https://hooks.example/services/s3cr3t')"
        )
    finally:
        await conn.close()


async def test_old_data_is_made_safe_holds_are_backfilled_and_the_slack_url_sealed(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    dsn = await _database_before_the_hardening(postgres_url, tmp_path)
    await _old_data(dsn)

    async with running_intake(postgres_url, kafka_bootstrap, database_url=dsn) as intake:
        first, second = {"Authorization": "Bearer rfk_first"}, {"Authorization": "Bearer rfk_second"}
        balance = (await intake.client.get("/v1/balance", headers=first)).json()["data"]
        assert balance == [{"currency": "EUR", "paid": 10_000, "refunded": 0, "held": 3_500, "available": 6_500}]
        asked = await intake.client.post(
            "/v1/refunds", headers=first, json={"payment_id": "pay_first", "reason": "duplicate", "amount": 6_500}
        )
        assert asked.status_code == 201, asked.text

        # The later registration of the shared provider payment can no longer move money.
        request = await intake.client.post(
            "/v1/refunds", headers=second, json={"payment_id": "pay_second", "reason": "duplicate"}
        )
        approve = await intake.client.post("/v1/refunds/ref_pending/approve", headers=second)
        for answer in (request, approve):
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "provider_payment_conflict"
        assert await intake.db.fetchval("SELECT amount FROM refund_approvals WHERE refund_id = 'ref_pending'") == 1000

        row = await intake.db.fetchrow("SELECT * FROM notification_settings WHERE merchant_id = 'mer_first'")
        assert "s3cr3t" not in json.dumps({k: str(v) for k, v in dict(row).items()})
        shown = (await intake.client.get("/v1/notification-settings", headers=first)).json()
        assert shown["slack_webhook_url"] is not None and "s3cr3t" not in shown["slack_webhook_url"]
