"""The public refund policy, kept in memory for its max-age: anyone may ask for it, without a key, as often as
they like, and the database is read once per merchant and product with an override per max-age, not once per call."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes
    etag: str
    stored_at: datetime


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def still_fresh(etag: str, if_none_match: str | None) -> bool:
    """Whether the client's copy (``If-None-Match``) is this answer: a 304 then."""
    return if_none_match is not None and etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


# What the cache needs read: the merchant's overridden products (None: no such merchant), and one answer's body
# (for a product with an override, or None: the merchant's policy; None back: no such merchant).
ReadOverridden = Callable[[], Awaitable[frozenset[str] | None]]
ReadBody = Callable[[str | None], Awaitable[bytes | None]]


class PublicPolicyCache:
    """Answers per (merchant, product with an override or None for the merchant's policy, form: the JSON, or a
    page), each for ``max_age``; the least recently stored go first past ``max_entries``. A product without
    override is the merchant's policy, and is answered as it: any product id anyone makes up is one entry, the
    merchant's. Unknown merchants are remembered apart, a few (``max_unknown``), so that made-up ones push no
    merchant's answers out. Per process: replicas may each hold their copy for up to ``max_age``, as clients may."""

    def __init__(self, max_age: timedelta, max_entries: int = 10_000, max_unknown: int = 1_000) -> None:
        self.max_age, self._max_entries, self._max_unknown = max_age, max_entries, max_unknown
        self._answers: OrderedDict[tuple[str, str | None, str], CachedAnswer] = OrderedDict()
        self._overridden: OrderedDict[str, tuple[frozenset[str], datetime]] = OrderedDict()
        self._unknown: OrderedDict[str, datetime] = OrderedDict()

    async def answer(
        self,
        merchant_id: str,
        product_id: str | None,
        now: datetime,
        form: str,
        *,
        overridden: ReadOverridden,
        body: ReadBody,
    ) -> CachedAnswer | None:
        """The answer for the product (``product_id``) of the merchant, read when not held fresh; None: no such
        merchant."""
        if self._fresh(self._unknown.get(merchant_id), now):
            return None
        known = self._overridden.get(merchant_id)
        if known is None or not self._fresh(known[1], now):
            products = await overridden()
            if products is None:
                self._no_such_merchant(merchant_id, now)
                return None
            known = self._keep(self._overridden, merchant_id, (products, now), self._max_entries)
        product = product_id if product_id in known[0] else None
        cached = self._answers.get((merchant_id, product, form))
        if cached is not None and self._fresh(cached.stored_at, now):
            return cached
        read = await body(product)
        if read is None:
            self._no_such_merchant(merchant_id, now)
            return None
        answer = CachedAnswer(body=read, etag=etag_of(read), stored_at=now)
        return self._keep(self._answers, (merchant_id, product, form), answer, self._max_entries)

    def forget(self, merchant_id: str) -> None:
        """The merchant changed its policy: this replica answers anew at once."""
        for key in [k for k in self._answers if k[0] == merchant_id]:
            del self._answers[key]
        self._overridden.pop(merchant_id, None)
        self._unknown.pop(merchant_id, None)

    def _fresh(self, stored_at: datetime | None, now: datetime) -> bool:
        return stored_at is not None and now - stored_at < self.max_age

    def _no_such_merchant(self, merchant_id: str, now: datetime) -> None:
        self._keep(self._unknown, merchant_id, now, self._max_unknown)
        self._overridden.pop(merchant_id, None)

    @staticmethod
    def _keep(entries: OrderedDict[K, V], key: K, value: V, most: int) -> V:
        entries.pop(key, None)
        entries[key] = value
        while len(entries) > most:
            entries.popitem(last=False)
        return value
