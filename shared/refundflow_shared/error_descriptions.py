"""What a failure says where people read it (a dead letter's ``dlq_error``, a log line, its traceback): its type and
message, without the data some errors quote. A validation error quotes its input, a PostgreSQL error the row it
refused (``DETAIL: Failing row contains (...)``, ``Key (email)=(...)``): a customer's email, a note, a portal link."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from types import TracebackType

import asyncpg
from pydantic import ValidationError

from refundflow_shared.event_decoding import validation_summary


def describe_failure(exc: BaseException) -> str:
    """A failure for the dead-letter record and the log: its type and what it says without the data it quotes."""
    if (words := _words_without_data(exc)) is not None:
        return f"{type(exc).__name__}: {words}"
    return f"{type(exc).__name__}: {exc}"[:1000]


def format_exception(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """A traceback as Python writes it, each error of its chain saying only what ``describe_failure`` says."""
    text = "".join(traceback.format_exception(*exc_info))
    for exc in _chain(exc_info[1]):
        if (words := _words_without_data(exc)) is not None:
            text = text.replace(str(exc), words)
    return text


def _words_without_data(exc: BaseException) -> str | None:
    """What an error that quotes data says without it; None for any other error."""
    if isinstance(exc, ValidationError):
        return validation_summary(exc)
    if isinstance(exc, asyncpg.PostgresError):
        # The primary message names the relation and the constraint; the detail and hint quote the row.
        message = exc.args[0] if exc.args else ""
        constraint = f", constraint {exc.constraint_name}" if exc.constraint_name else ""
        return f"{message} (SQLSTATE {exc.sqlstate}{constraint})"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
