"""Which API keys the sandbox refuses as Stripe refuses a rolled key (401 ``api_key_expired``). No HTTP here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class KeyRevoked(Exception):
    """The key was revoked (rolled, expired)."""


class ApiKeys:
    def __init__(self, revoked: Iterable[str] = ()) -> None:
        self._revoked = {key for key in revoked if key}
        self._refused: Counter[str] = Counter()

    def check(self, api_key: str) -> None:
        """Raise KeyRevoked (and count the refusal) for a revoked key."""
        if api_key in self._revoked:
            self._refused[api_key] += 1
            raise KeyRevoked(api_key)

    def revoke(self, api_key: str) -> None:
        self._revoked.add(api_key)

    def restore(self, api_key: str) -> None:
        self._revoked.discard(api_key)

    def status(self, api_key: str) -> dict[str, object]:
        return {"api_key": api_key, "revoked": api_key in self._revoked, "refused_requests": self._refused[api_key]}
