"""PostgreSQL access: one asyncpg pool per service, confined to the service's own schema."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

_LOCK_NAME = re.compile(r"[a-z_.]{1,63}")


# A session idle inside a transaction longer than this is ended by the server, its locks and row locks freed: an
# instance that stopped mid-transaction (its host gone, its loop stuck) would hold them until its connection dies.
# Well above the longest a transaction legitimately waits on its client, a wait for the broker inside it (the relay's
# for a wave's acknowledgements, a handler's for its dead letter): aiokafka's request timeout, 40 s. Provider calls,
# emails and webhooks run outside transactions (leases). A transaction that outlasts it anyway is only done again.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 300
# The server probes a silent peer after 30 s and gives it up after 3 unanswered probes 10 s apart: a vanished host's
# sessions end within a minute, not the kernel's default 2 h 11 min (TCP only; a Unix socket's peer cannot vanish).
_TCP_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


# What the settings say of a DATABASE_URL that would not read as meant (asyncpg's parser quotes it, password and all).
NOT_A_POSTGRES_URL = "not a PostgreSQL URL: percent-encode / ? # @ in its user and password (%2F %3F %23 %40)"


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` reads as the PostgreSQL URL it was meant to be: a password's ``/``, ``#`` or ``?`` not
    percent-encoded ends the address early, leaving the rest of it (``...@host/db``) in the path, query or fragment,
    or the password as the port. Several hosts (``db1:5432,db2:5432``) and an ``@`` in a query value are asyncpg's."""
    try:
        parts = urlsplit(url)  # raises on an unclosed [IPv6 address
        # What asyncpg reads the query with: a password's rest there (``x@host:5432/db``) is no key=value.
        parse_qs(parts.query, strict_parsing=True)
    except ValueError:
        return False
    return (
        parts.scheme in ("postgresql", "postgres")
        and not parts.fragment
        and "@" not in parts.path
        and all(_is_host_and_port(host) for host in database_hosts(url) if host)
    )


def database_hosts(url: str) -> list[str]:
    """The ``host[:port]`` entries of a URL's host part, as asyncpg splits them (none for a Unix socket's URL)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    return hosts.split(",") if hosts else []


def _is_host_and_port(entry: str) -> bool:
    if entry.startswith("["):  # an IPv6 address, [::1]:5432
        _, closed, port = entry.partition("]")
        port = port.removeprefix(":") if closed else "x"
    else:
        port = entry.partition(":")[2]
    return re.fullmatch(r"[0-9]*", port) is not None


async def connect(dsn: str, **options: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, whose error for a URL it cannot read never quotes the URL."""
    try:
        return await asyncpg.connect(dsn, **options)
    except ValueError as exc:  # asyncpg's parser's (its connection errors are not ValueErrors) quote the URL
        raise ValueError(f"DATABASE_URL cannot be read ({type(exc).__name__}, not shown: it quotes the URL)") from None


def session_settings(
    application_name: str, *, idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS
) -> dict[str, str]:
    """What every session of ours tells the server, a service's pool and the operator's CLI alike: who it is, to end
    it when it sits idle inside a transaction, and to probe its peer when it falls silent."""
    return {
        "application_name": application_name,
        "idle_in_transaction_session_timeout": str(round(idle_in_transaction_timeout_seconds * 1000)),
        **_TCP_KEEPALIVES,
    }


def service_application_name(schema: str) -> str:
    """What every session of a service's pool is called on the server (``pg_stat_activity.application_name``): how
    the migrations find an instance of the service still running."""
    return f"refundflow-{schema}"


async def create_pool(
    dsn: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified table names in ``schema`` first, and whose sessions the server
    ends when they sit idle inside a transaction or their peer stops answering."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={
            "search_path": schema,
            **session_settings(
                service_application_name(schema),
                idle_in_transaction_timeout_seconds=idle_in_transaction_timeout_seconds,
            ),
        },
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool, beyond asyncpg's own rollback of an open transaction:
    nothing. Our sessions keep no state past a transaction (transaction-level advisory locks only, no cursors, no
    SET; a listener is removed by whoever added it), and the default reset (pg_advisory_unlock_all, CLOSE ALL,
    UNLISTEN *, RESET ALL) costs a round trip on every release: about ten per refund."""


@asynccontextmanager
async def read_snapshot(
    pool: asyncpg.Pool, *, statement_timeout_seconds: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A read of several statements that must agree (a payment, then its refunds): every statement sees the
    database as it was at the first one, and none may write. A plain transaction would not do it: at READ
    COMMITTED each statement sees what committed before it. With ``statement_timeout_seconds``, PostgreSQL stops
    a statement that runs longer (``asyncpg.QueryCanceledError``), for this transaction only."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if statement_timeout_seconds is not None:
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, round(statement_timeout_seconds * 1000))}")
        yield conn


async def is_reachable(pool: asyncpg.Pool) -> bool:
    try:
        await pool.fetchval("SELECT 1", timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


# Advisory lock classes, the first key of PostgreSQL's two-key form (the second is the hashed name): one class per
# use, so that names hashed for one use never meet another's, above all a user-chosen name (a rate limit's bucket
# holds a sign-in email's hash) a claim's lock. The one-key (bigint) form, older versions' migration lock, is apart.
CLAIM_LOCKS = 1
RATE_LIMIT_LOCKS = 2
RETENTION_LOCKS = 3
SUBSCRIPTION_LOCKS = 4  # intake: one subscription's cancels, asked through any of its payments
MERCHANT_CONFIGURATION_LOCKS = 5  # notifier: a merchant's configurations against the batches handling its events
MIGRATION_LOCKS = 6  # one per schema (its hashed name): schemas are disjoint, so one's long migration holds no other


@asynccontextmanager
async def transaction_holding(conn: asyncpg.Connection, lock: str) -> AsyncIterator[None]:
    """A transaction that begins holding the transaction-level advisory lock named ``lock``, a constant of our code
    (``notifier.message_claim``): BEGIN and the lock go in one round trip, not two. Committed when the block ends,
    rolled back when it raises."""
    if not _LOCK_NAME.fullmatch(lock):  # it is written into the SQL: never anything but a plain name
        raise ValueError(f"not a lock name: {lock!r}")
    await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCKS}, hashtext('{lock}'))")
    try:
        yield
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
