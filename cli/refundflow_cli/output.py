"""What a command prints: Rich tables for people, one JSON document (or JSON lines) for scripts, and one line on
stderr for an error. Customers' email addresses are masked and sealed secrets never shown, in either form."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from refundflow_cli.outcomes import OperatorError

# A local part is masked whole: a dot-atom of RFC 5322's atext (\w: any letter, an address may be josé@...; and
# ' ! & / = and the rest, which intake accepts), or a quoted string, its quotes escaped (\"...\") inside JSON text.
_ATEXT = r"[\w!#$%&'*+/=?^`{|}~-]"
_EMAIL = re.compile(
    rf"(?:(?P<quote>\\?\")(?P<quoted_first>[^\"\\\s]?)(?:\\.|[^\"\\\n])*?(?P=quote)"
    rf"|(?<!{_ATEXT})(?P<first>{_ATEXT})(?:{_ATEXT}|\.)*)"  # from a run's start: a long run is read once
    r"@(?P<domain>[\w-]+(?:\.[\w-]+)+)"
)
# What a terminal would obey rather than show (C0 and C1 controls, ESC among them), line breaks and tabs too: a
# customer's note holding one would print a line of its own, which could read as another record.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SEALED_KEYS = ("sealed_", "encrypted_", "secret", "signing_")


def mask_emails(text: str) -> str:
    """``ada@example.com`` -> ``a***@example.com``: enough to tell customers apart, not to write to them."""
    return _EMAIL.sub(_masked, text)


def _masked(email: re.Match[str]) -> str:
    return f"{email['first'] or email['quoted_first']}***@{email['domain']}"


def shown(text: str) -> str:
    """``text`` as a terminal may print it, on one line: emails masked, and each control character as its escape
    (``\\x1b``, ``\\n``), so that an escape sequence in hostile data (a customer's note, a record's key) is seen,
    never obeyed."""
    return _CONTROL.sub(_escape, mask_emails(text))


def _escape(control: re.Match[str]) -> str:
    char = control.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


def redacted(value: Any, key: str = "") -> Any:
    """JSON-like data with emails masked and sealed values replaced (an operator never needs them)."""
    if key.lower().startswith(_SEALED_KEYS) or "secret" in key.lower():
        return "(sealed)" if value else value
    if isinstance(value, str):
        return mask_emails(value)
    if isinstance(value, Mapping):
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def as_json(data: Any) -> str:
    return json.dumps(data, default=jsonable, ensure_ascii=False)


def age(seconds: float | None) -> str:
    """A short human duration: 45s, 12m 5s, 3h 2m, 4d 1h."""
    if seconds is None:
        return "-"
    whole = int(max(seconds, 0))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def when(value: datetime | None, timespec: str = "seconds") -> str:
    return value.isoformat(timespec=timespec) if value is not None else "-"


class Output:
    """Where one command writes. In JSON mode stdout holds only JSON; notes go to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
        self._errors = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def document(self, data: Any) -> None:
        """The command's whole answer, as one JSON document."""
        sys.stdout.write(as_json(redacted(data)) + "\n")
        sys.stdout.flush()

    def json_line(self, data: Any) -> None:
        sys.stdout.write(as_json(redacted(data)) + "\n")
        sys.stdout.flush()

    def line(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(shown(text), style=style or ""), soft_wrap=True)

    def note(self, text: str) -> None:
        """Something the operator should read that is not the answer itself (stderr, so JSON stays clean)."""
        self._errors.print(Text(shown(text), style="dim"))

    def table(
        self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)"
    ) -> None:
        rows = list(rows)
        if not rows:
            self.line(f"{title}: {empty}", style="dim")
            return
        table = Table(title=title, title_justify="left", title_style="bold", show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(shown("-" if cell is None else str(cell))) for cell in row))
        self.console.print(table)

    def error(self, error: OperatorError) -> None:
        if self.json_mode:
            sys.stdout.write(as_json({"error": {"code": error.code, "message": error.message}}) + "\n")
            sys.stdout.flush()
        self._errors.print(Text(f"refundflow: {shown(error.message)}", style="bold red"), soft_wrap=True)
