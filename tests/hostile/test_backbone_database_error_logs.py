"""A PostgreSQL error quotes the row it refused (``DETAIL: Failing row contains (...)``, ``Key (email)=(...)``): a
customer's email, a merchant's name, a note, a sealed portal link. Neither a dead letter's ``dlq_error`` nor a log
line, nor the traceback in it, carries that detail; they name the error, its SQLSTATE and its constraint."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
import structlog

from refundflow_shared.error_descriptions import describe_failure
from refundflow_shared.structured_logging import configure_logging
from tests.conftest import create_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = "ada.lovelace@example.com"


@pytest.fixture(scope="module")
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(await create_database(postgres_url))
    await conn.execute(
        "CREATE TABLE refunds (email text UNIQUE, amount bigint CONSTRAINT refunds_amount_check CHECK (amount > 0))"
    )
    await conn.execute("INSERT INTO refunds VALUES ($1, 100)", CUSTOMER)
    try:
        yield conn
    finally:
        await conn.close()


async def refused(conn: asyncpg.Connection, amount: int) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as raised:
        await conn.execute("INSERT INTO refunds VALUES ($1, $2)", CUSTOMER, amount)
    assert CUSTOMER in str(raised.value)  # PostgreSQL's own words quote the row
    return raised.value


async def test_a_dead_letters_error_names_the_constraint_but_not_the_row(conn: asyncpg.Connection) -> None:
    check = describe_failure(await refused(conn, 0))
    unique = describe_failure(await refused(conn, 5))

    assert check == (
        'CheckViolationError: new row for relation "refunds" violates check constraint "refunds_amount_check"'
        " (SQLSTATE 23514, constraint refunds_amount_check)"
    )
    assert unique.startswith("UniqueViolationError: duplicate key value violates unique constraint")
    assert "SQLSTATE 23505" in unique
    assert CUSTOMER not in check + unique


@pytest.mark.parametrize("through", ["structlog", "stdlib"])
async def test_a_logged_traceback_of_a_database_error_keeps_its_frames_but_not_the_row(
    conn: asyncpg.Connection, through: str, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("test")
    error = await refused(conn, 0)
    try:
        raise RuntimeError("handling failed") from error
    except RuntimeError:
        if through == "structlog":
            structlog.get_logger("refundflow.tests").exception("handler_failed")
        else:  # as uvicorn and FastStream log theirs
            logging.getLogger("refundflow.tests").exception("handler_failed")

    [line] = [json.loads(text) for text in capfd.readouterr().out.splitlines() if "handler_failed" in text]
    traceback = line["exception"]
    assert "in refused" in traceback and "RuntimeError: handling failed" in traceback
    assert "asyncpg.exceptions.CheckViolationError: new row" in traceback
    assert "SQLSTATE 23514" in traceback
    assert CUSTOMER not in json.dumps(line)
