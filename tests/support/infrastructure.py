"""Where tests get a real broker and a real PostgreSQL: env vars, else Docker, else the embedded ones."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from refundflow_devstack.local_kafka import LocalKafka
from refundflow_devstack.local_postgres import LocalPostgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
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
        server = LocalPostgres(workdir / "postgres", port=free_port())
        try:
            yield server.start()
        finally:
            server.stop()


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
