"""Data written before the hardening: the migrations make it safe instead of failing or trusting it."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from refundflow_intake import ledger
from refundflow_intake.app import MIGRATIONS
from refundflow_intake.notification_settings import announce_earlier_portal_switches
from refundflow_shared.migrations_runner import apply_migrations
from tests.conftest import create_database
from tests.support.intake_harness import running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
FIRST_HARDENING_MIGRATION = "0300"
FIRST_POLICY_CLEANING_MIGRATION = "0660"


async def _database_before(migration: str, postgres_url: str, tmp_path: Path) -> str:
    """A database migrated up to (without) ``migration``, as one written before it was."""
    dsn = await create_database(postgres_url)
    old = tmp_path / "old-migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < migration:
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
    dsn = await _database_before(FIRST_HARDENING_MIGRATION, postgres_url, tmp_path)
    await _old_data(dsn)

    async with running_intake(postgres_url, kafka_bootstrap, database_url=dsn) as intake:
        first, second = {"Authorization": "Bearer rfk_first"}, {"Authorization": "Bearer rfk_second"}
        balance = (await intake.client.get("/v1/balance", headers=first)).json()["data"]
        assert balance == [{"currency": "EUR", "paid": 10_000, "refunded": 0, "held": 3_500, "available": 6_500}]
        asked = await intake.client.post(
            "/v1/refunds",
            headers={**first, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": "pay_first", "reason": "duplicate", "amount": 6_500},
        )
        assert asked.status_code == 201, asked.text

        # The later registration of the shared provider payment can no longer move money.
        request = await intake.client.post(
            "/v1/refunds",
            headers={**second, "Idempotency-Key": uuid.uuid4().hex},
            json={"payment_id": "pay_second", "reason": "duplicate"},
        )
        approve = await intake.client.post("/v1/refunds/ref_pending/approve", headers=second)
        for answer in (request, approve):
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "provider_payment_conflict"
        assert await intake.db.fetchval("SELECT amount FROM refund_approvals WHERE refund_id = 'ref_pending'") == 1000

        row = await intake.db.fetchrow("SELECT * FROM notification_settings WHERE merchant_id = 'mer_first'")
        assert "s3cr3t" not in json.dumps({k: str(v) for k, v in dict(row).items()})
        shown = (await intake.client.get("/v1/notification-settings", headers=first)).json()
        assert shown["slack_webhook_url"] is not None and "s3cr3t" not in shown["slack_webhook_url"]


# Saved through PUT /v1/refund-policy before the rules tightened: the first rules took any text of 1 to 100
# characters, any number of categories (of any length, empty too) and reasons, and thresholds of any size.
OLD_POLICY = {
    "refund_window_days": 14,
    "excluded_categories": ["gift\n\x7fcard", "", "\t\x85\u2029", "x" * 150, " kept as it was "],
    "accepted_reasons": ["duplicate", "other"] * 12,
    "process_time": "5–10 business days,\r\nsometimes more\t",
    "review_target_hours": 48,
    "auto_approve": {"max_amount": {"amount": 10**13, "currency": "EUR"}, "reasons": ["duplicate"] * 21},
    "second_approval_above": {"amount": 10**15, "currency": "EUR"},
}
OLD_OVERRIDE = {"process_time": "\u2028", "excluded_categories": [f"c{i % 60}" for i in range(70)]}


async def test_a_policy_saved_under_the_first_rules_is_read_under_todays(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Reading such a policy failed validation: the merchant's policy API and pages, and every refund, broke."""
    dsn = await _database_before(FIRST_POLICY_CLEANING_MIGRATION, postgres_url, tmp_path)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    try:
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('mer_old', 'Old Shop')")
        await conn.execute(
            "INSERT INTO api_keys (id, merchant_id, key_hash) VALUES ('key_old', 'mer_old', $1)",
            hashlib.sha256(b"rfk_old").digest(),
        )
        for product, document in (("", OLD_POLICY), ("prod_old", OLD_OVERRIDE)):
            await conn.execute(
                "INSERT INTO refund_policies (merchant_id, product_id, policy) VALUES ('mer_old', $1, $2::jsonb)",
                product,
                json.dumps(document),
            )
    finally:
        await conn.close()

    async with running_intake(postgres_url, kafka_bootstrap, database_url=dsn) as intake:
        merchant = {"Authorization": "Bearer rfk_old"}
        answer = await intake.client.get("/v1/refund-policy", headers=merchant)
        assert answer.status_code == 200, answer.text
        policy, overrides = answer.json()["policy"], answer.json()["product_overrides"]
        assert policy["process_time"] == "5–10 business days, sometimes more"
        assert policy["excluded_categories"] == ["gift card", "x" * 100, " kept as it was "]
        assert policy["accepted_reasons"] == ["duplicate", "other"]
        assert policy["auto_approve"] == {"max_amount": {"amount": 10**12, "currency": "EUR"}, "reasons": ["duplicate"]}
        assert policy["second_approval_above"] == {"amount": 10**12, "currency": "EUR"}
        assert "process_time" not in overrides["prod_old"]  # the merchant's applies
        assert overrides["prod_old"]["excluded_categories"] == [f"c{i}" for i in range(50)]

        page = await intake.client.get("/policy/mer_old", params={"product_id": "prod_old"})
        assert page.status_code == 200 and "5–10 business days, sometimes more" in page.text

        payment = await intake.payment(
            merchant, product={"id": "prod_old", "name": "Old product", "kind": "one_time", "category": "c3"}
        )
        quote = await intake.client.post(
            "/v1/refunds/quote", headers=merchant, json={"payment_id": payment["id"], "reason": "duplicate"}
        )
        assert quote.status_code == 200, quote.text
        assert quote.json()["flags"] == ["excluded_category"]


async def test_a_portal_switched_off_before_the_notifier_heard_of_switches_is_announced_to_it_once(
    postgres_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The notifier keeps a link an outcome carries unless it knows the portal is off: a merchant that switched it
    off before intake announced switches is announced at start-up, once, with its settings."""
    dsn = await _database_before("0710", postgres_url, tmp_path)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    try:
        await conn.execute("INSERT INTO merchants (id, name, portal_enabled) VALUES ('mer_off', 'Off', false)")
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('mer_on', 'On')")
        await conn.execute("INSERT INTO notification_settings (merchant_id, reply_to) VALUES ('mer_off', 'a@off.test')")
    finally:
        await conn.close()

    async with running_intake(postgres_url, kafka_bootstrap, database_url=dsn) as intake:
        told = await intake.staged("notification_settings.configured", "mer_off")
        assert [(t["portal_enabled"], t["reply_to"]) for t in told] == [(False, "a@off.test")]
        assert await intake.staged("notification_settings.configured", "mer_on") == [], "on, as the notifier has it"
        assert await announce_earlier_portal_switches(intake.db) == 0, "once"


async def test_the_balance_totals_start_as_the_sum_of_the_entries_written_before(
    postgres_url: str, tmp_path: Path
) -> None:
    dsn = await _database_before("0861", postgres_url, tmp_path)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    try:
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('mer_a', 'A'), ('mer_b', 'B')")
        await conn.executemany(
            "INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id) VALUES ($1, $2, $3, $4, $5)",
            [
                ("mer_a", "EUR", 10_000, "payment", "pay_1"),
                ("mer_a", "EUR", 5_000, "payment", "pay_2"),
                ("mer_a", "EUR", -3_000, "refund_hold", "ref_1"),
                ("mer_a", "EUR", 3_000, "refund_release", "ref_1"),
                ("mer_a", "EUR", -3_000, "refund", "ref_1"),
                ("mer_a", "EUR", -1_000, "refund_hold", "ref_2"),
                ("mer_a", "EUR", -700, "external_refund", "re_x"),
                ("mer_a", "EUR", 700, "external_refund_reversal", "re_x"),
                ("mer_a", "EUR", -200, "external_refund_hold", "re_y"),
                ("mer_a", "USD", 4_000, "payment", "pay_3"),
                ("mer_b", "EUR", 1_000, "payment", "pay_4"),
            ],
        )
        await apply_migrations(dsn, "intake", MIGRATIONS)
        totals = await conn.fetch(
            "SELECT merchant_id, currency, paid, refunded, held FROM balance_totals ORDER BY merchant_id, currency"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in totals] == [
        ("mer_a", "EUR", 15_000, 3_000, 1_200),
        ("mer_a", "USD", 4_000, 0, 0),
        ("mer_b", "EUR", 1_000, 0, 0),
    ]


async def test_entries_an_old_instance_wrote_after_the_totals_began_are_counted_again_by_the_next_upgrade(
    postgres_url: str, tmp_path: Path
) -> None:
    """An instance of the version before 0861 left running through the upgrade wrote its entries alone, without
    adding them to the totals: they were missing from the balance for good. 0898 sums the ledger again."""
    dsn = await _database_before("0861", postgres_url, tmp_path)
    before_repair = tmp_path / "before-repair"
    before_repair.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < "0898":
            shutil.copy(path, before_repair / path.name)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    old_way = "INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id) VALUES ($1, $2, $3, $4, $5)"
    try:
        await conn.execute("INSERT INTO merchants (id, name) VALUES ('mer_a', 'A'), ('mer_b', 'B')")
        await conn.execute(old_way, "mer_a", "EUR", 10_000, "payment", "pay_1")
        await apply_migrations(dsn, "intake", before_repair)
        # The new version's writes: one folded into the totals, one still a delta.
        await ledger.record(conn, "payment", "pay_2", {"merchant_id": "mer_a", "currency": "EUR", "amount": 5_000})
        await ledger.fold_totals(conn)
        await ledger.record(conn, "refund_hold", "ref_1", {"merchant_id": "mer_a", "currency": "EUR", "amount": 2_000})
        # The old instance's, after 0861 committed.
        await conn.executemany(
            old_way,
            [
                ("mer_a", "EUR", 4_000, "payment", "pay_3"),
                ("mer_a", "EUR", -1_000, "refund_hold", "ref_2"),
                ("mer_a", "EUR", 1_000, "refund_release", "ref_2"),
                ("mer_a", "EUR", -1_000, "refund", "ref_2"),
                ("mer_a", "USD", 3_000, "payment", "pay_4"),
                ("mer_b", "EUR", 700, "payment", "pay_5"),
            ],
        )
        damaged = await ledger.balance(conn, "mer_a")
        assert damaged[0]["paid"] == 15_000, "the damage: the old instance's payment is not counted"

        await apply_migrations(dsn, "intake", MIGRATIONS)
        repaired = {m: await ledger.balance(conn, m) for m in ("mer_a", "mer_b")}
        await ledger.fold_totals(conn)
        folded = {m: await ledger.balance(conn, m) for m in ("mer_a", "mer_b")}
    finally:
        await conn.close()
    expected = {
        "mer_a": [
            {"currency": "EUR", "paid": 19_000, "refunded": 1_000, "held": 2_000, "available": 16_000},
            {"currency": "USD", "paid": 3_000, "refunded": 0, "held": 0, "available": 3_000},
        ],
        "mer_b": [{"currency": "EUR", "paid": 700, "refunded": 0, "held": 0, "available": 700}],
    }
    assert repaired == expected
    assert folded == expected, "the deltas were absorbed, not counted twice"
