"""Request-scoped dependencies: the database and who is calling."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import asyncpg
import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from refundflow_intake import actors
from refundflow_intake.api.errors import READ_TIMED_OUT, ApiError
from refundflow_intake.domain import PlatformOnly
from refundflow_intake.merchant_accounts import api_key_owner
from refundflow_intake.portal.links import CustomerLinks
from refundflow_intake.settings import IntakeSettings
from refundflow_intake.team_members import AccountLinks
from refundflow_shared.contention_retries import RequestEffects
from refundflow_shared.database import read_snapshot
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)
_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class Database:
    """The request's units of work. It notes what may outlast the request: a committed transaction, a change made
    by one statement, and whatever is done with the pool itself."""

    def __init__(
        self, pool: asyncpg.Pool, effects: RequestEffects | None = None, *, read_timeout_seconds: float | None = None
    ) -> None:
        self._pool = pool
        self._effects = effects or RequestEffects()
        self._read_timeout_seconds = read_timeout_seconds

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for use cases that run their own transactions or call out (rate limits, the notifier, sign-in):
        what they did is not known here, so it counts as lasting."""
        self._effects.lasting = True
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction: commits when the block ends, rolls back if it raises."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn
        self._effects.lasting = True

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """A read of several statements that must agree (``read_snapshot``). A statement that runs past
        READ_STATEMENT_TIMEOUT_SECONDS is stopped, so that one heavy read cannot hold a connection and the database
        for long: answered 503 ``read_timed_out``."""
        try:
            async with read_snapshot(self._pool, statement_timeout_seconds=self._read_timeout_seconds) as conn:
                yield conn
        except asyncpg.QueryCanceledError as exc:  # the timeout, or an operator's pg_cancel_backend
            log.warning("read_timed_out", timeout_seconds=self._read_timeout_seconds, sqlstate=exc.sqlstate)
            said = "reading this took too long and was stopped: ask for less (a shorter period), or try again later"
            raise ApiError(503, READ_TIMED_OUT, said) from exc

    @asynccontextmanager
    async def connection(self, *, changes: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection in no transaction, two round trips (BEGIN, COMMIT) fewer: for a read of one statement, and
        for a change that one statement makes whole (atomic by itself), which says ``changes``."""
        self._effects.lasting = self._effects.lasting or changes  # its statements each commit on their own
        async with self._pool.acquire() as conn:
            yield conn


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a hop that costs more than the
# dependency itself on every request.
async def get_database(request: Request) -> Database:
    effects: RequestEffects | None = getattr(request.state, "request_effects", None)
    timeout: float = request.app.state.settings.read_statement_timeout_seconds
    return Database(request.app.state.runtime.pool, effects, read_timeout_seconds=timeout)


Db = Annotated[Database, Depends(get_database)]


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' header is required")


async def settings_of(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


Settings = Annotated[IntakeSettings, Depends(settings_of)]


async def require_admin(settings: Settings, db: Db, credentials: Credentials) -> None:
    """The platform's own calls (admin token). A merchant's API key is told so (403), anything else is a 401."""
    if credentials is None:
        raise _unauthorized()
    expected = settings.refundflow_admin_token.get_secret_value().encode()
    if hmac.compare_digest(credentials.credentials.encode(), expected):
        return
    async with db.connection() as conn:
        if await api_key_owner(conn, credentials.credentials) is not None:
            raise PlatformOnly("a platform call: it takes the platform's admin token, not a merchant's API key")
    raise _unauthorized()


@dataclass(frozen=True)
class Caller:
    merchant_id: str
    key_id: str

    @property
    def actor(self) -> str:
        """How the audit trail names who acted."""
        return actors.api_key(self.key_id)


async def current_caller(db: Db, credentials: Credentials) -> Caller:
    """The merchant the API key belongs to; every query is then scoped to it."""
    if credentials is None:
        raise _unauthorized()
    async with db.connection() as conn:
        owner = await api_key_owner(conn, credentials.credentials)
    if owner is None:
        raise _unauthorized()
    structlog.contextvars.bind_contextvars(merchant_id=owner[0])
    return Caller(merchant_id=owner[0], key_id=owner[1])


CurrentCaller = Annotated[Caller, Depends(current_caller)]


async def current_time(request: Request) -> datetime:
    """Now, from the app's clock (tests inject one to move time without waiting)."""
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


Now = Annotated[datetime, Depends(current_time)]


async def account_links(settings: Settings) -> AccountLinks:
    """Where invite and reset links point, and the box that seals them for the notifier."""
    key = settings.webhook_secret_key
    return AccountLinks(settings.dashboard_public_url, SecretBox(key.get_secret_value()) if key else None)


Links = Annotated[AccountLinks, Depends(account_links)]


async def customer_links(request: Request) -> CustomerLinks:
    """Mints the customer's portal links (in the events intake publishes, and for the portal-token call)."""
    links: CustomerLinks = request.app.state.customer_links
    return links


ToCustomer = Annotated[CustomerLinks, Depends(customer_links)]
