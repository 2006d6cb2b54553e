"""Which failures are the infrastructure's (wait them out) and which are the work's own (give up on that piece).

A database that restarts, fails over, runs out of connections or cancels queries will be back: every message
would fail the same way meanwhile, so a consumer waits instead of dead-lettering them all. A broker that does not
answer is the same for the outbox relay. Anything else is a fault of the one message or row at hand.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

# Contention (PostgreSQL, Appendix A): class 40 transaction rollback (serialization failure, deadlock) and 55P03 a
# lock wait that timed out. The transaction was undone whole, and the same work succeeds when run again.
_CONTENTION_CLASSES = frozenset({"40"})
_CONTENTION_STATES = frozenset({"55P03"})
# SQLSTATE classes of a database that is away or overloaded, besides contention: 08 connection exception,
# 53 insufficient resources (too many connections, disk full, out of memory), 57 operator intervention
# (admin/crash shutdown, query canceled, cannot connect now).
_WAIT_CLASSES = frozenset({"08", "53", "57"}) | _CONTENTION_CLASSES
# A demoted primary refuses writes until the failover completes.
_WAIT_STATES = frozenset({"25006"}) | _CONTENTION_STATES


class DatabaseUnavailable(Exception):
    """No connection could be had: nothing can be handled until the database is back."""


def database_is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database is away or overloaded, not that the work itself is wrong; or when it
    was raised while handling such a failure (a rollback on a connection the server just closed, say)."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 5:
        if _says_unavailable(cause):
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def database_is_contended(exc: BaseException) -> bool:
    """True when ``exc`` itself says the transaction met other transactions (a deadlock, a serialization failure, a
    lock wait that timed out): PostgreSQL undid it whole, and the same work succeeds when run again. Unlike
    ``database_is_unavailable``, a connection that failed is not contention: a COMMIT it carried may have been kept."""
    return isinstance(exc, asyncpg.PostgresError) and _sqlstate_in(exc, _CONTENTION_CLASSES, _CONTENTION_STATES)


def _sqlstate_in(exc: asyncpg.PostgresError, classes: frozenset[str], states: frozenset[str]) -> bool:
    state = str(getattr(exc, "sqlstate", "") or "")
    return state[:2] in classes or state in states


def _says_unavailable(exc: BaseException) -> bool:
    # OSError: connection refused or reset. InterfaceError: the connection was closed under us.
    # InternalClientError: the client's protocol state was left mid-operation by a connection the server killed
    # (and asyncpg's stale statement cache, which clears itself): both pass when tried again.
    if isinstance(exc, DatabaseUnavailable | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate_in(exc, _WAIT_CLASSES, _WAIT_STATES)
    return False


def broker_is_unavailable(exc: BaseException) -> bool:
    """True when the broker did not answer (or not yet), as opposed to refusing this one record."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError | OSError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
