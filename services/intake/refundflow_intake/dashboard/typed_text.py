"""Text typed into a page's textarea (a customer's details, a decision's notes), held to the API's length for the
same text (``MAX_NOTE``) as the person typing it counted it. No I/O here.

A browser counts a line break as one character against the textarea's ``maxlength`` but sends it as two (CRLF): a
text the browser allowed may arrive longer than the limit. So the form field's own limit is only a generous cap
against absurd bodies, and the length is checked on the page, line breaks made one, which shows the form again with
what was typed and says by how much it is over.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form

from refundflow_intake.api.fields import MAX_NOTE

# Every character a line break, sent as two, and room to spare: beyond it, the body is not a person's typing.
RAW_TEXT_CAP = 4 * MAX_NOTE
TypedText = Annotated[str, Form(max_length=RAW_TEXT_CAP)]


def as_typed(text: str) -> str:
    """The text with each line break one character (LF), as the browser counted it."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def too_long(what: str, text: str) -> str | None:
    """What to tell the person when ``text`` (already ``as_typed``) is over ``MAX_NOTE``; None when it fits."""
    if len(text) <= MAX_NOTE:
        return None
    return f"{what} is {len(text)} characters long: please shorten it to {MAX_NOTE} at most."
