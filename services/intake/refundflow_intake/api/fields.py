"""The kinds of text the API accepts, each bounded: nothing unbounded reaches the database, an event or an email.

Text that may end up in an email header (names, addresses, one-line settings) must hold no control character:
a CR/LF there would add headers, or make the notifier refuse every email of the merchant.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import Header, Path, Query
from pydantic import AfterValidator, AnyHttpUrl, AwareDatetime, BeforeValidator, EmailStr, Field, UrlConstraints

from refundflow_intake.domain import holds_control_characters
from refundflow_shared.money import CurrencyCode

MAX_ID = 255  # as the event contract's ids; far below PostgreSQL's btree row limit


def no_control_characters(text: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise ValueError("must be one line of printable text (no control characters)")
    return text


def _display_name(text: str) -> str:
    if any(c in text for c in '<>@"'):
        raise ValueError("a display name must not look like an address (no <, >, @ or quotes)")
    if "=?" in text:  # the start of an RFC 2047 word, which mail clients decode into any name and address
        raise ValueError("a display name must not hold an encoded word (no =?)")
    return no_control_characters(text)


# The same rules in the OpenAPI document, so a client (or a fuzzer) can tell what is accepted before it sends it.
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # Unicode's Cc, Zl and Zp, as no_control_characters sees them
ONE_LINE = f"^[^{_CONTROL}]*$"
_NAME = f'^(?!.*=\\?)[^{_CONTROL}<>@"]*$'
# email-validator refuses the special-use top-level domains (RFC 6761), which JSON Schema's format does not.
_SPECIAL_USE = "|".join("".join(f"[{c}{c.upper()}]" for c in tld) for tld in SPECIAL_USE_DOMAIN_NAMES)
_DELIVERABLE = f"^(?!.*[.@](?:{_SPECIAL_USE})$)"

Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID, json_schema_extra={"pattern": ONE_LINE}),
    AfterValidator(no_control_characters),
]
Line = Annotated[
    str, Field(max_length=200, json_schema_extra={"pattern": ONE_LINE}), AfterValidator(no_control_characters)
]
ShortLine = Annotated[
    str, Field(max_length=100, json_schema_extra={"pattern": ONE_LINE}), AfterValidator(no_control_characters)
]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": _NAME}), AfterValidator(_display_name)
]
MAX_NOTE = 2000
Note = Annotated[str, Field(max_length=MAX_NOTE)]  # body text of an email or the timeline: line breaks are fine


def no_control_characters_but_line_breaks(text: str) -> str:
    if holds_control_characters(text):
        raise ValueError("must be text: no control characters but line breaks and tabs")
    return text


_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"  # as holds_control_characters sees them
# A customer's own words, as the portal's page takes them (``domain.holds_control_characters``).
CustomerText = Annotated[
    str,
    Field(max_length=MAX_NOTE, json_schema_extra={"pattern": _TEXT}),
    AfterValidator(no_control_characters_but_line_breaks),
]
Email = Annotated[EmailStr, Field(max_length=320, json_schema_extra={"pattern": _DELIVERABLE})]
ACCOUNT_EMAIL_RULE = "a dashboard account's address is plain ASCII (no accented or other non-ASCII letters)"


def plain_ascii(address: str) -> str:
    if not address.isascii():
        raise ValueError(ACCOUNT_EMAIL_RULE)
    return address


# An account's address (a team member's, an owner's): PostgreSQL finds accounts by its lowercase, which the database's
# locale makes (İ is i there, i and a combining dot in Python), so a look-alike address was the same account; in plain
# ASCII every lowercase agrees. A customer's address stays ``Email``: it is theirs, and only mailed.
AccountEmail = Annotated[
    EmailStr,
    Field(max_length=320, json_schema_extra={"pattern": _DELIVERABLE + "[!-~]*$"}),
    AfterValidator(plain_ascii),
]
# Syntax only: whether we may call it (a public address) is checked when it is saved, by the use case.
OutboundUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)]


Currency = CurrencyCode

# An integer or a boolean is one in the JSON (no "14", no true for 1, no 0 for false); see json_body for 14.0.
Count = Annotated[int, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2026-11-20T10:00:00Z")
    return value


# What OpenAPI's ``format: date-time`` means: not a Unix timestamp, not a date alone, not without a time zone.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=ONE_LINE)]
QueryId = Annotated[str | None, Query(min_length=1, max_length=MAX_ID, pattern=ONE_LINE)]
_SAME_KEY_SAME_RESULT = "a retry with the same key returns the first result"
# A key holds something besides spaces: a blank one (the pattern unmatched) is answered 400 idempotency_key_blank, a
# missing required one 400 idempotency_key_required (see the errors' handlers), not 422 invalid_request.
_NOT_BLANK = r"\S"
IdempotencyKey = Annotated[str | None, Header(max_length=255, pattern=_NOT_BLANK, description=_SAME_KEY_SAME_RESULT)]
RequiredIdempotencyKey = Annotated[
    str,
    Header(max_length=255, pattern=_NOT_BLANK, description=f"required: {_SAME_KEY_SAME_RESULT}, never a second one"),
]
