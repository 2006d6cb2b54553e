"""The public refund policy, kept in memory for its max-age: anyone may ask for it, without a key, as often as
they like, and the database is read once per merchant and product per max-age, not once per call."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes | None  # None: no such merchant
    etag: str
    stored_at: datetime


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def still_fresh(etag: str, if_none_match: str | None) -> bool:
    """Whether the client's copy (``If-None-Match``) is this answer: a 304 then."""
    return if_none_match is not None and etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


class PublicPolicyCache:
    """Answers per (merchant, product, form: the JSON, or a page), each for ``max_age``; the least recently stored
    go first past ``max_entries``. Per process: replicas may each hold their copy for up to ``max_age``, as
    clients may."""

    def __init__(self, max_age: timedelta, max_entries: int = 10_000) -> None:
        self.max_age, self._max_entries = max_age, max_entries
        self._answers: OrderedDict[tuple[str, str | None, str], CachedAnswer] = OrderedDict()

    def get(self, merchant_id: str, product_id: str | None, now: datetime, form: str = "json") -> CachedAnswer | None:
        answer = self._answers.get((merchant_id, product_id, form))
        if answer is None or now - answer.stored_at >= self.max_age:
            return None
        return answer

    def put(
        self, merchant_id: str, product_id: str | None, body: bytes | None, now: datetime, form: str = "json"
    ) -> CachedAnswer:
        answer = CachedAnswer(body=body, etag=etag_of(body or b""), stored_at=now)
        key = (merchant_id, product_id, form)
        self._answers.pop(key, None)
        self._answers[key] = answer
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)
        return answer

    def forget(self, merchant_id: str) -> None:
        """The merchant changed its policy: this replica answers anew at once."""
        for key in [k for k in self._answers if k[0] == merchant_id]:
            del self._answers[key]
