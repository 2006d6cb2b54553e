"""Shared fixtures: one broker and one PostgreSQL server per test process (each xdist worker), a fresh database
per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.infrastructure import kafka_broker, postgres_server

pytest_plugins = ["tests.support.hung_tasks"]  # a timed-out test names the coroutines it hung on


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with kafka_broker(tmp_path_factory.mktemp("kafka")) as servers:
        yield servers


async def create_database(server_url: str) -> str:
    """A new, empty database on the test server; returns its DSN."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_database(server_url, name)


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test."""
    yield await create_database(postgres_url)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def topic_prefix() -> str:
    """Topics of their own for each test, on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
