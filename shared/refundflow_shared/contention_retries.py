"""A request whose transaction met other transactions (a deadlock, a serialization failure, a lock wait that timed
out: ``transient_faults.database_is_contended``, what the consumers retry too) is run again, whole, a few times;
then, or at once when something it did may outlast it, it is answered 503 ``database_busy``. Every service's HTTP
routes that touch the database are ``RetriedRoute``s.

Run again only when nothing of it was kept: PostgreSQL undid the failed transaction, and the request had committed
nothing before it (``RequestEffects.lasting``: intake's request database notes a committed transaction, a rate
limit's count, a call to the notifier; a route of the processor or the notifier runs one transaction, so has
nothing to note); its reads are only read again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from refundflow_shared.backoff import exponential, jittered
from refundflow_shared.http_metrics import route_template
from refundflow_shared.metrics import counts_on_commit
from refundflow_shared.transient_faults import database_is_contended

log = structlog.get_logger(__name__)

ATTEMPTS = 3
# Not tried again after this long: a lock wait that timed out (lock_timeout) has already kept the client waiting.
RETRY_WITHIN_SECONDS = 5.0
_BACKOFF_BASE_SECONDS, _BACKOFF_CAP_SECONDS = 0.05, 0.5

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass
class RequestEffects:
    """Whether something a request did may outlast it (``lasting``): then it is never run again."""

    lasting: bool = False


class DatabaseBusy(Exception):
    """The request's transaction met other transactions (a deadlock, a serialization failure, a lock wait that timed
    out) on every try: PostgreSQL undid it, and the same request succeeds in a moment."""

    status = 503
    code = "database_busy"
    retry_after_seconds = 1
    message = "busy with other changes to the same records: please try again in a moment"


class RetriedRoute(APIRoute):
    """A route whose request is run again when its transaction met other transactions, and safely can be."""

    def get_route_handler(self) -> Handler:
        return run_again_on_contention(super().get_route_handler())


def run_again_on_contention(handle: Handler) -> Handler:
    """``handle`` (FastAPI's: dependencies, then the endpoint) run again, whole, after contention (see module)."""

    async def handle_with_retries(request: Request) -> Response:
        started, attempt = time.monotonic(), 1
        met: asyncpg.PostgresError | None = None  # the last contention, when one was met
        while True:
            effects = request.state.request_effects = RequestEffects()
            try:
                async with counts_on_commit():  # an attempt undone takes its counts with it
                    response = await handle(request)
            except asyncpg.PostgresError as exc:
                if not database_is_contended(exc):
                    raise
                if effects.lasting or attempt == ATTEMPTS or time.monotonic() - started > RETRY_WITHIN_SECONDS:
                    log.warning("database_busy", **_described(request, exc, attempt))
                    raise DatabaseBusy(DatabaseBusy.message) from exc
                met = exc
                await asyncio.sleep(
                    jittered(exponential(attempt, base=_BACKOFF_BASE_SECONDS, cap=_BACKOFF_CAP_SECONDS))
                )
                attempt += 1
                continue
            if met is not None:
                log.info("database_contention_retried", **_described(request, met, attempt))
            return response

    return handle_with_retries


def answer_database_busy_as_json(app: FastAPI) -> None:
    """``DatabaseBusy`` answered as every service's API answers an error, ``{"error": {"code", "message"}}``, with
    a Retry-After (intake's error handlers answer it themselves, as a page where people read pages)."""

    async def database_busy(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": {"code": DatabaseBusy.code, "message": DatabaseBusy.message}},
            status_code=DatabaseBusy.status,
            headers={"Retry-After": str(DatabaseBusy.retry_after_seconds)},
        )

    app.add_exception_handler(DatabaseBusy, database_busy)


def _described(request: Request, exc: asyncpg.PostgresError, attempts: int) -> dict[str, Any]:
    # The route's template, never the values in the path; the request's ids are bound (merchant, refund, trace).
    return {
        "method": request.method,
        "route": route_template(request.scope),
        "attempts": attempts,
        "sqlstate": exc.sqlstate,
    }
