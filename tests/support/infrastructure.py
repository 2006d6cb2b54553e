"""Where tests get a real broker and a real PostgreSQL: env vars, else Docker, else the embedded ones."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from refundflow_devstack.local_kafka import LocalKafka
from refundflow_devstack.local_postgres import LocalPostgres

# Services under test leave a consumer group this long after going quiet. Joining takes half of it on Tansu, so
# production's 10 s made every start wait 5 s; 3 s still leaves room for a loaded machine's heartbeats.
CONSUMER_SESSION_TIMEOUT_MS = 3_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 20_000  # above the fixed ports of the dev stack (8000-8002, 12111), which a test starts


def port_slice(worker: int, *, workers: int, below: int) -> range:
    """The ports of one of ``workers`` parallel test workers: its own share of ``_LOWEST_PORT``..``below``."""
    size = (below - _LOWEST_PORT) // workers
    start = _LOWEST_PORT + worker * size
    return range(start, start + size)


def _ports_of_this_worker() -> Iterator[int]:
    """Each port of this worker's slice once, then round again (a port is checked free before it is handed out).

    The slice lies below the kernel's ephemeral range: ``bind(0)`` hands out a port of that range, where any
    outgoing connection may take it before the process the port is for binds it ("address already in use").
    """
    first_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0]) if _EPHEMERAL_RANGE.exists() else 0
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if first_ephemeral < _LOWEST_PORT + workers * 1000:  # no room below the range (or not Linux): the kernel's pick
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                yield s.getsockname()[1]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    ports = port_slice(worker, workers=workers, below=first_ephemeral)
    offset = os.getpid() % len(ports)  # two runs side by side (the suite and a bench) start apart
    while True:
        for i in range(len(ports)):
            yield ports[(offset + i) % len(ports)]


_next_port = _ports_of_this_worker()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and that no outgoing connection will take."""
    while True:
        port = next(_next_port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # someone listens there, or it is in TIME_WAIT: the next one
                continue
            return port


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means "no usable Docker engine here"
        return False
    return True


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """A DSN to a server on which tests may create databases."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
    elif docker_available():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as container:
            yield container.get_connection_url()
    else:
        os.environ.setdefault("REFUNDFLOW_PG_FSYNC", "off")  # test data is thrown away anyway
        with postgres_folder(workdir) as folder:
            server = LocalPostgres(folder / "postgres", port=free_port())
            try:
                yield server.start()
            finally:
                server.stop()


@contextmanager
def postgres_folder(workdir: Path) -> Iterator[Path]:
    """Where an embedded server keeps its data (``workdir`` or a folder of its own).

    As root the server runs as another user, who reaches its folder only while every folder above it lets others
    through. Every pytest run that starts on the machine makes its temp root (``/tmp/pytest-of-root``) private again,
    which took a server under it down mid-suite; so as root the data lies in a folder of its own in the system's temp.
    """
    if os.geteuid() != 0:
        yield workdir
        return
    folder = Path(tempfile.mkdtemp(prefix="refundflow-test-pg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@contextmanager
def kafka_broker(workdir: Path) -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker."""
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
    elif docker_available():
        from testcontainers.community.kafka import KafkaContainer

        # testcontainers' Kafka module drives Confluent's packaging of Apache Kafka (KRaft mode here).
        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        broker = LocalKafka(port=free_port(), log_file=workdir / "tansu.log")
        try:
            yield broker.start()
        finally:
            broker.stop()


async def database_over_tcp(database_url: str) -> str:
    """The same database over TCP: the embedded server's DSN is its Unix socket, where TCP keepalives read as 0."""
    if not parse_qs(urlsplit(database_url).query).get("host", [""])[0].startswith("/"):
        return database_url
    conn = await asyncpg.connect(database_url)
    try:
        port, name = await conn.fetchrow("SELECT current_setting('port'), current_database()")
    finally:
        await conn.close()
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"
