"""A merchant with a long history: the dashboard's first pages and badges read what they show, not the history.

Each query runs as the dashboard and the API run it, through a connection that first has PostgreSQL explain it
(ANALYZE, BUFFERS) and counts the blocks it touched; the tables are ANALYZEd, so the planner chooses as it would
for such a merchant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest

from refundflow_intake import insights, ledger, listing_queries, repository
from refundflow_intake.app import MIGRATIONS
from refundflow_intake.dashboard import queries
from refundflow_shared.migrations_runner import apply_migrations
from tests.conftest import create_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
MERCHANT = "mer_long_history"
PAYMENTS = 40_000
# Blocks a first page may touch: its 21 rows and, for each, the subqueries that say its status. The whole history
# is several thousand.
PAGE_BLOCKS = 600
FEW_ROWS_BLOCKS = 120  # a page of the three pending requests, or of their payments
TEN_ROWS_BLOCKS = 250  # a page of ten payments found by a search (the merchant's every payment was about 1,500)


class CountingBlocks:
    """Runs each statement as asked, as often as a busy dashboard does (PostgreSQL may then plan a prepared
    statement once for any parameters: a partial index is of no use to such a plan unless the statement names its
    condition), and keeps in ``blocks`` what the last run touched, as ``auto_explain`` reports it."""

    RUNS = 8  # past the five custom plans PostgreSQL makes before it may keep a generic one

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.blocks: list[int] = []
        self.plans: list[dict[str, Any]] = []  # the last run's, each statement's
        self._plans: list[dict[str, Any]] = []

    @property
    def connection(self) -> asyncpg.Connection:
        """This, standing in for the connection the queries take."""
        return cast(asyncpg.Connection, self)

    async def __aenter__(self) -> CountingBlocks:
        await self.conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;"
            " SET auto_explain.log_buffers = on; SET auto_explain.log_format = json;"
            " SET auto_explain.log_level = notice"
        )
        self.conn.add_log_listener(self._heard)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.conn.remove_log_listener(self._heard)
        await self.conn.execute("SET auto_explain.log_min_duration = -1")

    def _heard(self, _: object, message: asyncpg.PostgresLogMessage) -> None:
        _, _, plan = message.message.partition("plan:\n")
        if plan:
            self._plans.append(json.loads(plan)["Plan"])

    async def _run(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        for _ in range(self.RUNS):
            self._plans.clear()
            answer = await getattr(self.conn, method)(sql, *args)
        [top] = self._plans
        self.plans.append(top)
        self.blocks.append(top["Shared Hit Blocks"] + top["Shared Read Blocks"])
        return answer

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("fetch", sql, args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", sql, args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchval", sql, args)


def indexes_read(plan: dict[str, Any]) -> set[str]:
    """The indexes a plan (as ``CountingBlocks`` keeps it) reads, in any of its nodes."""
    here = {plan["Index Name"]} if "Index Name" in plan else set()
    return here.union(*(indexes_read(child) for child in plan.get("Plans", [])))


@pytest.fixture(scope="module")
async def long_history(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """40,000 payments paid over four years (registered in another order: imported), a refund of every fourth,
    and three refund requests still pending, the oldest two years old and flagged overdue; another merchant."""
    dsn = await create_database(postgres_url)
    await apply_migrations(dsn, "intake", MIGRATIONS)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    await conn.execute("INSERT INTO merchants (id, name) VALUES ($1, 'Long history'), ('mer_other', 'Other')", MERCHANT)
    await conn.execute(
        "INSERT INTO payments (id, merchant_id, customer_email, amount, currency, provider_payment_id, paid_at,"
        " product_id, product_name, product_kind, created_at)"
        " SELECT 'pay_' || n, CASE WHEN n % 10 = 0 THEN 'mer_other' ELSE $1 END, 'c' || n || '@example.com', 10000,"
        " 'EUR', 'pi_' || n, now() - (($2 - n) * interval '50 minutes'), 'prod', 'Product', 'one_time',"
        " now() - ((n * 7919 % $2) * interval '50 minutes')"
        " FROM generate_series(1, $2) AS n",
        MERCHANT,
        PAYMENTS,
    )
    await conn.execute(
        "INSERT INTO refunds (id, merchant_id, payment_id, amount, currency, reason, status, created_at)"
        " SELECT 're_' || p.id, p.merchant_id, p.id, 1000, 'EUR', 'duplicate',"
        " CASE WHEN p.id IN ('pay_1004', 'pay_20004', 'pay_30004') THEN 'pending' ELSE 'succeeded' END,"
        " p.paid_at + interval '1 day'"
        " FROM payments p WHERE substring(p.id FROM 5)::int % 4 = 0"
    )
    await conn.execute("UPDATE refunds SET review_overdue_at = now() WHERE id = 're_pay_1004'")  # two years late
    payments = await conn.fetch("SELECT id, merchant_id, amount, currency FROM payments")
    refunds = await conn.fetch("SELECT id, merchant_id, amount, currency FROM refunds WHERE status = 'succeeded'")
    await ledger.record_all(
        conn, [ledger.payment_credit(dict(p)) for p in payments] + [("refund", r["id"], dict(r)) for r in refunds]
    )
    await ledger.fold_totals(conn)
    # Each entry booked when its payment was paid or its refund asked for, as a long history's would be.
    await conn.execute(
        "UPDATE balance_entries e SET created_at = coalesce("
        " (SELECT p.paid_at FROM payments p WHERE e.kind = 'payment' AND p.id = e.source_id),"
        " (SELECT r.created_at FROM refunds r WHERE e.kind = 'refund' AND r.id = e.source_id))"
    )
    for table in ("payments", "refunds", "balance_entries"):
        await conn.execute(f"VACUUM ANALYZE {table}")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def counting(long_history: asyncpg.Connection) -> AsyncIterator[CountingBlocks]:
    async with CountingBlocks(long_history) as counting:
        yield counting


async def test_the_payments_first_page_reads_the_newest_payments_only(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    rows, has_more = await queries.payments_page(
        counting.connection, MERCHANT, page=1, with_requests=False, search=None
    )
    assert has_more
    assert [r["id"] for r in rows][:2] == [f"pay_{PAYMENTS - 1}", f"pay_{PAYMENTS - 2}"]  # paid last, first
    assert counting.blocks[0] < PAGE_BLOCKS, counting.blocks


async def test_payments_with_open_requests_are_found_from_the_requests(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    rows, has_more = await queries.payments_page(counting.connection, MERCHANT, page=1, with_requests=True, search=None)
    assert [r["id"] for r in rows] == ["pay_30004", "pay_20004", "pay_1004"]
    assert not has_more
    assert counting.blocks[0] < FEW_ROWS_BLOCKS, counting.blocks
    listed, _ = await listing_queries.list_payments(
        counting.connection,
        MERCHANT,
        limit=20,
        starting_after=None,
        has_open_refund_request=True,
    )
    assert {r["id"] for r in listed} == {"pay_30004", "pay_20004", "pay_1004"}
    assert counting.blocks[1] < FEW_ROWS_BLOCKS, counting.blocks


async def test_a_search_by_customer_email_reads_the_payments_it_finds(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    """Ten of the merchant's 36,000 addresses start so: the search walked them all, newest first, looking for 21.
    The test databases' collation is the server's locale (C.UTF-8 here), in which, as in en_US.UTF-8, only a
    text_pattern_ops index serves a LIKE prefix."""
    rows, has_more = await queries.payments_page(
        counting.connection, MERCHANT, page=1, with_requests=False, search="C1234"
    )
    assert [r["id"] for r in rows] == [f"pay_1234{n}" for n in range(9, 0, -1)] + ["pay_1234"]  # pay_12340: other's
    assert not has_more
    collation = await long_history.fetchval("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    assert "payments_by_merchant_email" in indexes_read(counting.plans[0]), (collation, counting.blocks)
    assert counting.blocks[0] < TEN_ROWS_BLOCKS, counting.blocks


async def test_the_pending_badge_counts_only_the_pending(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    assert await queries.pending_count(counting.connection, MERCHANT) == 3
    assert counting.blocks[0] < 20, counting.blocks


async def test_the_review_queue_pages_pending_oldest_first_then_the_rest_newest_first(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    first, has_more = await queries.review_queue(counting.connection, MERCHANT, page=1, status=None, reason=None)
    assert has_more
    assert [r["id"] for r in first][:4] == ["re_pay_1004", "re_pay_20004", "re_pay_30004", f"re_pay_{PAYMENTS - 4}"]
    assert sum(counting.blocks) < PAGE_BLOCKS, counting.blocks

    # The same order as one sort of all of them, page after page, across the pending's end.
    everything = await long_history.fetch(
        "SELECT id FROM refunds WHERE merchant_id = $1 ORDER BY (status = 'pending') DESC,"
        " CASE WHEN status = 'pending' THEN created_at END ASC, created_at DESC, id",
        MERCHANT,
    )
    pages = [first]
    for page in (2, 3):
        pages.append((await queries.review_queue(long_history, MERCHANT, page=page, status=None, reason=None))[0])
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in everything[:60]]
    last_page = len(everything) // queries.PAGE_SIZE + 1
    last, more = await queries.review_queue(long_history, MERCHANT, page=last_page, status=None, reason=None)
    assert not more
    assert [r["id"] for r in last] == [r["id"] for r in everything[(last_page - 1) * queries.PAGE_SIZE :]]


async def test_the_review_queue_filtered_keeps_each_filter(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    pending, more = await queries.review_queue(counting.connection, MERCHANT, page=1, status="pending", reason=None)
    assert ([r["id"] for r in pending], more) == (["re_pay_1004", "re_pay_20004", "re_pay_30004"], False)
    assert sum(counting.blocks) < FEW_ROWS_BLOCKS, counting.blocks
    succeeded, more = await queries.review_queue(long_history, MERCHANT, page=1, status="succeeded", reason=None)
    assert more
    assert [r["id"] for r in succeeded][:1] == [f"re_pay_{PAYMENTS - 4}"]
    assert {r["status"] for r in succeeded} == {"succeeded"}
    none, more = await queries.review_queue(long_history, MERCHANT, page=1, status=None, reason="fraudulent")
    assert (none, more) == ([], False)


async def test_listing_pending_refunds_reads_only_the_pending(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    rows, more = await listing_queries.list_refunds(
        counting.connection,
        MERCHANT,
        limit=20,
        starting_after=None,
        status="pending",
    )
    assert ([r["id"] for r in rows], more) == (["re_pay_30004", "re_pay_20004", "re_pay_1004"], False)
    assert counting.blocks[0] < 50, counting.blocks


async def test_the_balance_reads_the_totals_not_the_ledger(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    lines = await ledger.balance(counting.connection, MERCHANT)
    summed = await long_history.fetchrow(
        "SELECT sum(amount) FILTER (WHERE kind = 'payment') AS paid, -sum(amount) FILTER (WHERE kind = 'refund')"
        " AS refunded FROM balance_entries WHERE merchant_id = $1",
        MERCHANT,
    )
    assert lines == [
        {
            "currency": "EUR",
            "paid": summed["paid"],
            "refunded": summed["refunded"],
            "held": 0,
            "available": summed["paid"] - summed["refunded"],
        }
    ]
    assert counting.blocks[0] < 10, counting.blocks


async def test_a_days_ledger_entries_are_read_from_that_day_alone(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    """Reconciliation asks for one day's entries in one currency, a page at a time, out of four years of them."""
    day = await long_history.fetchval("SELECT date_trunc('day', now() - interval '700 days')")
    rows, more = await listing_queries.list_balance_entries(
        counting.connection,
        MERCHANT,
        limit=100,
        starting_after=None,
        currency="EUR",
        start=day,
        end=day + timedelta(days=1),
    )
    expected = await long_history.fetchval(
        "SELECT count(*) FROM balance_entries WHERE merchant_id = $1 AND created_at >= $2"
        " AND created_at < $2 + interval '1 day'",
        MERCHANT,
        day,
    )
    assert (len(rows), more) == (expected, False) and 20 < expected < 100
    assert all(day <= r["created_at"] < day + timedelta(days=1) for r in rows)
    assert "balance_entries_by_merchant_time" in indexes_read(counting.plans[0]), counting.plans
    assert counting.blocks[0] < FEW_ROWS_BLOCKS, counting.blocks

    rows, _ = await listing_queries.list_balance_entries(
        counting.connection,
        MERCHANT,
        limit=100,
        starting_after=rows[-1]["id"],
        currency=None,
        start=None,
        end=None,
    )
    assert len(rows) == 100 and all(r["created_at"] < day for r in rows)
    assert counting.blocks[-1] < PAGE_BLOCKS, counting.blocks


MANY_PRODUCTS = "mer_many_products"
PRODUCTS = 400
# The platform's other merchants: their payments are what a per-product count of requests joined, product by product.
PLATFORM_PAYMENTS = 40_000


@pytest.fixture(scope="module")
async def many_products(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A merchant selling 400 products, 20,000 payments in the last half year and a refund request on every fourth,
    among 40,000 payments of other merchants."""
    dsn = await create_database(postgres_url)
    await apply_migrations(dsn, "intake", MIGRATIONS)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "intake"})
    await conn.execute(
        "INSERT INTO merchants (id, name) VALUES ($1, 'Many products'), ('mer_rest', 'Rest')", MANY_PRODUCTS
    )
    await conn.execute(
        "INSERT INTO payments (id, merchant_id, customer_email, amount, currency, provider_payment_id, paid_at,"
        " product_id, product_name, product_kind, created_at)"
        " SELECT 'pay_' || n, CASE WHEN n % 3 = 0 THEN $1 ELSE 'mer_rest' END, 'c' || n || '@example.com', 10000,"
        " 'EUR', 'pi_' || n, now() - (n * interval '4 minutes'), 'prod_' || n % $3, 'Product ' || n % $3,"
        " 'one_time', now() - (n * interval '4 minutes')"
        " FROM generate_series(1, $2) AS n",
        MANY_PRODUCTS,
        PLATFORM_PAYMENTS + PLATFORM_PAYMENTS // 2,
        PRODUCTS,
    )
    await conn.execute(
        "INSERT INTO refunds (id, merchant_id, payment_id, amount, currency, reason, status, created_at)"
        " SELECT 're_' || p.id, p.merchant_id, p.id, 1000, 'EUR', 'duplicate', 'succeeded',"
        " p.paid_at + interval '1 hour'"
        " FROM payments p WHERE substring(p.id FROM 5)::int % 4 = 0"
    )
    payments = await conn.fetch("SELECT id, merchant_id, amount, currency FROM payments")
    refunds = await conn.fetch("SELECT id, merchant_id, amount, currency FROM refunds")
    await ledger.record_all(
        conn, [ledger.payment_credit(dict(p)) for p in payments] + [("refund", r["id"], dict(r)) for r in refunds]
    )
    for table in ("payments", "refunds", "balance_entries"):
        await conn.execute(f"VACUUM ANALYZE {table}")
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_insights_count_each_products_requests_once_not_per_product(
    many_products: asyncpg.Connection,
) -> None:
    """The requests per product were a subquery run once per product and currency, which read every request of the
    period and its payment each time: 400 products read them 400 times (a merchant with 2,000 products held a
    connection for a minute). Counted once and joined, they cost what reading those tables once costs."""
    now = await many_products.fetchval("SELECT now()")
    end = now + timedelta(days=1)  # the last requests were made an hour after their payments
    async with CountingBlocks(many_products) as counting:
        found = await insights.refund_insights(counting.connection, MANY_PRODUCTS, end - timedelta(days=365), end, now)
    products = found["by_product"]
    assert len(products) == PRODUCTS
    asked = await many_products.fetch(
        "SELECT q.product_id, count(*) AS requests FROM refunds r JOIN payments q ON q.id = r.payment_id"
        " WHERE r.merchant_id = $1 GROUP BY q.product_id",
        MANY_PRODUCTS,
    )
    requests = {r["product_id"]: r["requests"] for r in asked}
    assert 0 < len(requests) < PRODUCTS  # some products were never asked to refund: their count is 0
    assert [p["requests"] for p in products] == [requests.get(p["product_id"], 0) for p in products]
    # A few blocks per row it joins (an index's path to each), once: per product, it read 8 million.
    rows = await many_products.fetchval(
        "SELECT (SELECT count(*) FROM payments WHERE merchant_id = $1)"
        " + (SELECT count(*) FROM refunds WHERE merchant_id = $1)"
        " + (SELECT count(*) FROM balance_entries WHERE merchant_id = $1 AND kind <> 'payment')",
        MANY_PRODUCTS,
    )
    assert counting.blocks[2] < 4 * rows, (counting.blocks, rows, json.dumps(counting.plans[2])[:3000])


async def test_the_disputed_payments_are_read_from_the_merchants_disputes(
    long_history: asyncpg.Connection, counting: CountingBlocks
) -> None:
    """The balance's disputed payments come from the merchant's few disputes, not its 36,000 payments, nor the
    platform's every dispute."""
    async with long_history.transaction():
        await long_history.execute(
            "INSERT INTO payment_disputes (payment_id, merchant_id) SELECT 'pay_' || n, 'mer_other'"
            " FROM generate_series(10, 40000, 10) AS n"
        )
        await long_history.execute(
            "INSERT INTO payment_disputes (payment_id, merchant_id) VALUES ('pay_7', $1), ('pi_8', $1)", MERCHANT
        )
        await long_history.execute("ANALYZE payment_disputes")
        disputed = await repository.disputed_per_currency(counting.connection, MERCHANT)
        await long_history.execute("DELETE FROM payment_disputes")
    assert disputed == [{"currency": "EUR", "disputed_payments": 2, "disputed": 20_000}]
    assert "payment_disputes_by_merchant" in indexes_read(counting.plans[0]), counting.plans
    assert counting.blocks[0] < FEW_ROWS_BLOCKS, counting.blocks
