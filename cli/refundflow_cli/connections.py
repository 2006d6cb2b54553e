"""Connections to the database and the broker. Failing to reach either ends the command with ``Unreachable``:
one line naming what could not be reached (never a password), and exit code 3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from refundflow_cli.outcomes import Unreachable, UsageProblem
from refundflow_cli.settings import CliSettings
from refundflow_shared.database import connect, database_hosts, session_settings
from refundflow_shared.transient_faults import broker_is_unavailable, database_is_unavailable

CLIENT_ID = "refundflow-cli"


def database_address(dsn: str) -> str:
    """host:port/database of a DSN the settings took (is_postgres_url), without user or password; the socket's
    directory for a Unix socket."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    port = query.get("port", ["5432"])[0]
    hosts = database_hosts(dsn) or query.get("host", ["localhost"])[:1]
    # A host without a port of its own (db2 in db1:5432,db2) is reached on the default one.
    where = ",".join(host if ":" in host.rpartition("]")[2] else f"{host}:{port}" for host in hosts)
    return f"{where}{parts.path or ''}"


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0].removeprefix(f"{name}: ") if str(exc).strip() else ""
    return f"{name}: {text}"[:300] if text else name


@asynccontextmanager
async def database(settings: CliSettings) -> AsyncIterator[asyncpg.Connection]:
    """One connection; tables are named with their schema (``intake.refunds``)."""
    where = database_address(settings.database_url)
    try:
        conn = await connect(
            settings.database_url,
            timeout=settings.cli_connect_timeout_seconds,
            # A CLI left at a prompt inside a transaction, or cut off, must not hold its locks: as a service's.
            server_settings=session_settings(CLIENT_ID),
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable(f"cannot reach the database at {where}: {_reason(exc)}") from None
    except ValueError as exc:  # said without the URL (connect)
        raise UsageProblem(str(exc)) from None
    try:
        yield conn
    except Exception as exc:
        if isinstance(exc, KafkaError) or not database_is_unavailable(exc):
            raise
        raise Unreachable(f"lost the database at {where}: {_reason(exc)}") from None
    finally:
        await conn.close(timeout=5)


def _broker_unreachable(settings: CliSettings, exc: BaseException) -> Unreachable:
    return Unreachable(f"cannot reach the broker at {settings.kafka_bootstrap_servers}: {_reason(exc)}")


async def _start(client: AIOKafkaAdminClient | AIOKafkaConsumer | AIOKafkaProducer, settings: CliSettings) -> None:
    try:
        await asyncio.wait_for(client.start(), timeout=settings.cli_connect_timeout_seconds)
    except (KafkaError, OSError, TimeoutError) as exc:
        if isinstance(client, AIOKafkaAdminClient):
            await client.close()
        else:
            await client.stop()
        raise _broker_unreachable(settings, exc) from None


@asynccontextmanager
async def _mapping_broker_faults(settings: CliSettings) -> AsyncIterator[None]:
    try:
        yield
    except (KafkaError, OSError, TimeoutError) as exc:
        if not broker_is_unavailable(exc):
            raise
        raise _broker_unreachable(settings, exc) from None


def _timeout_ms(settings: CliSettings) -> int:
    return int(settings.cli_connect_timeout_seconds * 1000)


@asynccontextmanager
async def kafka_admin(settings: CliSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        request_timeout_ms=_timeout_ms(settings),
    )
    await _start(admin, settings)
    try:
        async with _mapping_broker_faults(settings):
            yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def kafka_reader(settings: CliSettings, *, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (or, with ``group_id``, one that only reads and commits that group's offsets
    for partitions it assigns itself: it never joins the group)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(_timeout_ms(settings), 40_000),
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await _start(reader, settings)
    try:
        async with _mapping_broker_faults(settings):
            yield reader
    finally:
        await reader.stop()


@asynccontextmanager
async def kafka_writer(settings: CliSettings) -> AsyncIterator[AIOKafkaProducer]:
    """Waits for every in-sync replica, like the services' relays (no idempotent producer: Tansu lacks it)."""
    writer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=max(_timeout_ms(settings), 30_000),
        max_request_size=1024 * 1024,
    )
    await _start(writer, settings)
    try:
        async with _mapping_broker_faults(settings):
            yield writer
    finally:
        await writer.stop()
