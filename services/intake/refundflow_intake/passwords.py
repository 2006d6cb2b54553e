"""People's passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation), never stored in clear."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from refundflow_intake.domain import DomainError

MIN_LENGTH = 10
MAX_LENGTH = 256  # hashing is deliberately slow: an unbounded input would be a denial of service

T = TypeVar("T")
_hasher = PasswordHasher()
# A hash takes ~100 ms of CPU and 64 MiB: on the event loop it stalled every request, consumer and the outbox relay
# of the process meanwhile. Hashes run in these threads instead (argon2's C code releases the GIL), this many at
# once, which bounds their memory; more wait their turn, as many as ``limit_waiting`` allows.
CONCURRENT_HASHES = 2
HASH_SECONDS = 0.1  # about what one takes: how long the hashes waiting will keep the threads busy
# Checked when no account matches, so that a wrong address takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("refundflow: no such account")


class PasswordChecksBusy(Exception):
    """More hashes wait for a thread than may: the request is refused at once (503, a page with Retry-After) rather
    than queued for ever. Not a DomainError: a form must not show it as a mistake in what was typed."""

    status = 503
    code = "password_checks_busy"

    def __init__(self, retry_after_seconds: int) -> None:
        self.message = f"too many passwords are being checked: try again in {retry_after_seconds} seconds"
        super().__init__(self.message)
        self.retry_after_seconds = retry_after_seconds


class _HashingThreads:
    """The threads that hash, and how many hashes are in them (running or waiting): each attempt, an unknown
    address's too, costs one, and waiting ones held their requests until uvicorn's connection limit refused every
    request of the process."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=CONCURRENT_HASHES, thread_name_prefix="password-hashing")
        self._lock = threading.Lock()  # the count goes down in the hashing threads
        self._in_threads = 0
        self.max_waiting = 60  # about 3 s of hashes; IntakeSettings.password_hashes_waiting_max sets it

    async def run(self, work: Callable[[], T]) -> T:
        with self._lock:
            if self._in_threads >= CONCURRENT_HASHES + self.max_waiting:
                waited = self._in_threads * HASH_SECONDS / CONCURRENT_HASHES
                raise PasswordChecksBusy(max(math.ceil(waited), 1))
            self._in_threads += 1
        # Counted down when the hash ends, even if the request stopped waiting for it: the thread is busy till then.
        started = self._pool.submit(work)
        started.add_done_callback(self._finished)
        return await asyncio.wrap_future(started)

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_threads -= 1


_hashing = _HashingThreads()


def limit_waiting(hashes: int) -> None:
    """How many hashes may wait for a thread in this process (the threads are the process's); beyond, a request
    that would hash is refused with PasswordChecksBusy."""
    _hashing.max_waiting = hashes


class WeakPassword(DomainError):
    code = "password_not_acceptable"
    in_api = False


def check_acceptable(password: str, *, email: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword("the password must not be your email address")


async def _off_the_loop(work: Callable[[], T]) -> T:
    return await _hashing.run(work)


async def hash_password(password: str) -> str:
    """The hash to store, made off the event loop: call it outside any transaction (it holds no connection). Raises
    PasswordChecksBusy when too many hashes wait already."""
    return await _off_the_loop(lambda: _hasher.hash(password))


async def verify(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``stored_hash`` None (no account) costs the same and is False. Off the event
    loop, as ``hash_password``."""
    if len(password) > MAX_LENGTH:
        return False
    return await _off_the_loop(lambda: _verify_now(stored_hash, password))


def _verify_now(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
