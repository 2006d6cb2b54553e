"""The kinds of text the API accepts, each bounded: nothing unbounded reaches the database, an event or an email.

Text that may end up in an email header (names, addresses, one-line settings) must hold no control character:
a CR/LF there would add headers, or make the notifier refuse every email of the merchant.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AnyHttpUrl, EmailStr, Field, UrlConstraints

MAX_ID = 255  # as the event contract's ids; far below PostgreSQL's btree row limit


def no_control_characters(text: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise ValueError("must be one line of printable text (no control characters)")
    return text


def _display_name(text: str) -> str:
    if any(c in text for c in '<>@"'):
        raise ValueError("a display name must not look like an address (no <, >, @ or quotes)")
    return no_control_characters(text)


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(no_control_characters)]
Line = Annotated[str, Field(max_length=200), AfterValidator(no_control_characters)]
ShortLine = Annotated[str, Field(max_length=100), AfterValidator(no_control_characters)]
DisplayName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_display_name)]
Note = Annotated[str, Field(max_length=2000)]  # body text of an email or the timeline: line breaks are fine
Email = Annotated[EmailStr, Field(max_length=320)]
# Syntax only: whether we may call it (a public address) is checked when it is saved, by the use case.
OutboundUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048)]

PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID)]
