"""People's passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation), never stored in clear."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from refundflow_intake.domain import DomainError

MIN_LENGTH = 10
MAX_LENGTH = 256  # hashing is deliberately slow: an unbounded input would be a denial of service

_hasher = PasswordHasher()
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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``stored_hash`` None (no account) costs the same and is False."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
