"""People's passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation), never stored in clear."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from refundflow_intake.domain import DomainError

MIN_LENGTH = 10
MAX_LENGTH = 256  # hashing is deliberately slow: an unbounded input would be a denial of service

T = TypeVar("T")
_hasher = PasswordHasher()
# A hash takes ~100 ms of CPU and 64 MiB: on the event loop it stalled every request, consumer and the outbox relay
# of the process meanwhile. Hashes run in these threads instead (argon2's C code releases the GIL), this many at
# once, which bounds their memory; more sign-ins wait their turn.
CONCURRENT_HASHES = 2
_hashing = ThreadPoolExecutor(max_workers=CONCURRENT_HASHES, thread_name_prefix="password-hashing")
# Checked when no account matches, so that a wrong address takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("refundflow: no such account")


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
    return await asyncio.get_running_loop().run_in_executor(_hashing, work)


async def hash_password(password: str) -> str:
    """The hash to store, made off the event loop: call it outside any transaction (it holds no connection)."""
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
