"""Which failures are the infrastructure's (wait them out) and which are the work's own (give up on that piece).

A database that restarts, fails over, runs out of connections or cancels queries will be back: every message
would fail the same way meanwhile, so a consumer waits instead of dead-lettering them all. A broker that does not
answer is the same for the outbox relay. Anything else is a fault of the one message or row at hand.
"""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

# SQLSTATE classes of a database that is away or overloaded (PostgreSQL, Appendix A):
# 08 connection exception, 53 insufficient resources (too many connections, disk full, out of memory),
# 57 operator intervention (admin/crash shutdown, query canceled, cannot connect now),
# 40 transaction rollback (serialization failure, deadlock: the same work succeeds when run again).
_WAIT_CLASSES = frozenset({"08", "53", "57", "40"})
# A demoted primary refuses writes until the failover completes; a lock wait that timed out is contention.
_WAIT_STATES = frozenset({"25006", "55P03"})


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


def _says_unavailable(exc: BaseException) -> bool:
    # OSError: connection refused or reset. InterfaceError: the connection was closed under us.
    # InternalClientError: the client's protocol state was left mid-operation by a connection the server killed
    # (and asyncpg's stale statement cache, which clears itself): both pass when tried again.
    if isinstance(exc, DatabaseUnavailable | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _WAIT_CLASSES or state in _WAIT_STATES
    return False


def broker_is_unavailable(exc: BaseException) -> bool:
    """True when the broker did not answer (or not yet), as opposed to refusing this one record."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError | OSError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
