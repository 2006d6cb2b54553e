"""Stripe-like idempotency: the first response under a key is stored and replayed. No HTTP here.

Stripe's rules, as modelled:
- a key is scoped to the API key that sent it and kept for at least 24 hours;
- once the endpoint has started executing, its status code and body are stored, a 500 included,
  and every retry with the same key and parameters gets them back;
- the same key with other parameters (or another endpoint) is an idempotency error;
- a retry while the first request is still executing is refused (409), and nothing is stored
  for it, nor for a request that failed validation: both may be retried as they are.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

MAX_KEY_LENGTH = 255


class IdempotencyScope(NamedTuple):
    api_key: str
    key: str


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: bytes
    request_id: str


class IdempotencyKeyInUse(Exception):
    """Another request with this key is still executing."""


class IdempotencyKeyReused(Exception):
    """The key was first used with other parameters or on another endpoint."""


@dataclass
class _Entry:
    fingerprint: str
    started_at: float
    response: StoredResponse | None = None  # None while the first request is in flight


def request_fingerprint(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """What makes two requests "the same" for a key: endpoint and parameters, in any order."""
    canonical = json.dumps([method.upper(), path, sorted(params)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: dict[IdempotencyScope, _Entry] = {}

    def begin(self, scope: IdempotencyScope, fingerprint: str) -> StoredResponse | None:
        """Claim the key for a new execution (returns None) or return the stored response to replay.

        Raises IdempotencyKeyReused for other parameters, IdempotencyKeyInUse while in flight.
        """
        now = self._clock()
        entry = self._entries.get(scope)
        if entry is not None and entry.response is not None and now - entry.started_at >= self._ttl_seconds:
            del self._entries[scope]
            entry = None
        if entry is None:
            self._entries[scope] = _Entry(fingerprint=fingerprint, started_at=now)
            return None
        if entry.fingerprint != fingerprint:
            raise IdempotencyKeyReused(scope.key)
        if entry.response is None:
            raise IdempotencyKeyInUse(scope.key)
        return entry.response

    def complete(self, scope: IdempotencyScope, response: StoredResponse) -> None:
        """Store the response of the execution that claimed the key."""
        entry = self._entries.get(scope)
        if entry is None or entry.response is not None:
            raise RuntimeError(f"idempotency key {scope.key!r} was not claimed by an execution")
        entry.response = response

    def release(self, scope: IdempotencyScope) -> None:
        """Forget a claimed key whose request never executed, so it may be retried as it is."""
        entry = self._entries.get(scope)
        if entry is not None and entry.response is None:
            del self._entries[scope]
