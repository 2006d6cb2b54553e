"""Emails: rendered from templates, plain text and HTML, with the headers mail systems expect.

Merchant-set values (the sender name, the Reply-To address) and event text (an alert's title) never break a
header: control characters are dropped, and a value that is still unusable is left out, never fatal.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import unicodedata
import uuid
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from refundflow_notifier.notification_rules import EmailContent, MerchantPreferences
from refundflow_shared.secret_box import SecretBox
from refundflow_shared.settings import ServiceSettings

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html", "html.j2"]),  # our HTML templates end in .html.j2
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # the templates ship with the code: no need to stat them for every email
)


def _with_line_breaks(text: str) -> Markup:
    """A merchant's note in HTML: escaped, its lines kept (an email client runs them together otherwise)."""
    return Markup("<br>\n").join(escape(line) for line in text.splitlines())


_templates.filters["with_line_breaks"] = _with_line_breaks
_MAX_DISPLAY_NAME = 100
PLATFORM_NAME = "Refundflow"


class InvalidAddress(ValueError):
    """The recipient is not a deliverable email address: no server would take it."""


def message_id(event_id: uuid.UUID, kind: str, recipient: str, mail_from: str) -> str:
    """Stable per event, kind and recipient: a resend after a crash carries the same id, so mailers can dedupe. Its
    right-hand side is MAIL_FROM's domain: RFC 5322 wants a fully qualified one, and spam filters score a bare name."""
    digest = hashlib.sha256(f"{kind}/{recipient}".lower().encode()).hexdigest()[:16]
    _, address = _platform_sender(mail_from)
    return f"<{event_id}.{digest}@{address.rpartition('@')[2] or PLATFORM_NAME.lower()}>"


def recipient_reference(recipient: str, settings: ServiceSettings) -> str:
    """What logs show instead of an address: the same on every line of this deployment, so they correlate, but an
    HMAC keyed from its WEBHOOK_SECRET_KEYS' primary key, so nobody without the key can tell which address it is (an
    unkeyed hash of a known address would say). Without a key, keyed by one drawn at start: lines correlate within
    the process only."""
    keys = settings.webhook_secret_key.get_secret_value() if settings.webhook_secret_key else None
    return hmac.new(_reference_key(keys), recipient.lower().encode(), hashlib.sha256).hexdigest()[:16]


@functools.cache
def _reference_key(keys: str | None) -> bytes:
    return SecretBox(keys).derive_key(b"refundflow notifier log recipient") if keys else os.urandom(32)


def check_address(recipient: str) -> str:
    """The bare address, or InvalidAddress. ASCII only: we do not ask servers for SMTPUTF8."""
    _, address = parseaddr(recipient)
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain
        or not address.isascii()
        or any(c.isspace() or unicodedata.category(c)[0] == "C" for c in address)
        or address != recipient.strip()
    ):
        raise InvalidAddress("not a deliverable email address")
    return address


def header_text(value: str, limit: int = 200) -> str:
    """``value`` as one header line: control and format characters (CR, LF, bidi overrides...) dropped,
    runs of whitespace collapsed, at most ``limit`` characters."""
    if value.isascii() and value.isprintable():  # the usual case: nothing to drop, only spaces to collapse
        return " ".join(value.split())[:limit]
    kept = "".join(" " if c.isspace() else c for c in value if c.isspace() or unicodedata.category(c)[0] != "C")
    return " ".join(kept.split())[:limit]


def sender(mail_from: str, prefs: MerchantPreferences) -> tuple[str, str]:
    """The display name and address the email comes from: our address (it passes SPF/DKIM), under the merchant's
    name "via Refundflow" when it has one. The merchant chooses how it is called, never that the mail seems to
    come from someone else."""
    platform, address = _platform_sender(mail_from)
    merchant = header_text(prefs.sender_name or "", _MAX_DISPLAY_NAME)
    return (f"{merchant} via {platform}" if merchant else platform), address


@functools.lru_cache(maxsize=4)
def _platform_sender(mail_from: str) -> tuple[str, str]:
    """The display name and address of MAIL_FROM (a setting: parsed once)."""
    display, address = parseaddr(mail_from)
    username, _, domain = address.partition("@")
    return header_text(display) or PLATFORM_NAME, f"{username}@{domain}"


def reply_to(prefs: MerchantPreferences) -> str | None:
    """The merchant's Reply-To, if it is a usable address."""
    if not prefs.reply_to:
        return None
    try:
        return check_address(prefs.reply_to)
    except InvalidAddress:
        return None


@dataclass(frozen=True)
class WireEmail:
    """An email as it goes to the mail server (CRLF line ends), with its Message-ID."""

    message_id: str
    data: bytes


def build_email(
    event_id: uuid.UUID, content: EmailContent, *, mail_from: str, prefs: MerchantPreferences, recipient: str
) -> WireEmail:
    """The message for ``recipient``, an address ``check_address`` accepted: multipart/alternative, the plain text
    and the HTML each base64 in UTF-8. Without its Date: ``dated`` adds it as it is sent.

    Written out directly: the ``email`` package's generator folds every header through its ``Header`` class (and
    measures a non-ASCII subject both as quoted-printable and as base64), which took four times what building the
    whole message takes now. Every value here is one clean line already: a non-ASCII one goes as base64 words, a
    long ASCII one is folded by ``Header``."""
    # Both parts are base64, which never holds "=_": this boundary cannot occur in them.
    boundary = f"=_{uuid.uuid4().hex}"
    mid = message_id(event_id, content.kind, recipient, mail_from)
    headers = [
        ("To", recipient),
        ("Reply-To", reply_to(prefs)),
        ("Subject", header_text(content.subject, 250)),
        ("Message-ID", mid),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no auto-replies to a notification
    ]
    text, html = render(content)
    lines = [
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode(),
        _mailbox_line("From", *sender(mail_from, prefs)),
        *(_header_line(name, value) for name, value in headers if value is not None),
        b"\r\n",
        _part("text/plain", text, boundary),
        _part("text/html", html, boundary),
        f"--{boundary}--\r\n".encode(),
    ]
    return WireEmail(mid, b"".join(lines))


def dated(data: bytes) -> bytes:
    """The message as it goes out now, with its Date: when it is sent, not when it was queued, so one that waited for
    an earlier email or was retried for hours is not dated before the ones it follows. One queued with its Date (by
    a notifier before this one) keeps it: a message has one."""
    head = data.partition(b"\r\n\r\n")[0]
    if head.startswith(b"Date: ") or b"\r\nDate: " in head:
        return data
    return f"Date: {formatdate(localtime=False, usegmt=True)}{_CRLF}".encode() + data


_LINE = 78  # RFC 5322's recommended line length
_TOKEN_MAX = 900  # a header's one token on one line: within RFC 5322's 998 with its name
_CRLF = "\r\n"


def _header_line(name: str, value: str) -> bytes:
    _one_line(name, value)
    if not value.isascii() or (name == "Subject" and _holds_encoded_word(value)):
        return f"{name}: {_encoded_words(value, _LINE - len(name) - 2)}{_CRLF}".encode()
    if len(name) + 2 + len(value) <= _LINE or (not any(c.isspace() for c in value) and len(value) <= _TOKEN_MAX):
        # A single token (a Message-ID) has nowhere to fold: put on a line of its own, it reads back with the fold's
        # space before it, and receivers comparing or threading by it miss it. RFC 5322 allows lines of 998.
        return f"{name}: {value}{_CRLF}".encode()
    return f"{name}: {Header(value, maxlinelen=_LINE, header_name=name).encode(linesep=_CRLF)}{_CRLF}".encode()


def _mailbox_line(name: str, display: str, address: str) -> bytes:
    """A display name and an address. An ASCII name that folds into lines, and holds no "=?", goes as it is; any
    other goes as RFC 2047 words, one per line, the address after (a word is at most 75 characters, or not every
    client decodes it)."""
    room = _LINE - len(name) - 2
    if display.isascii() and not _holds_encoded_word(display):
        mailbox = formataddr((display, address))
        if max(map(len, mailbox.split())) <= room:
            return _header_line(name, mailbox)
    _one_line(name, display, address)
    return f"{name}: {_encoded_words(display, room)}{_CRLF} <{address}>{_CRLF}".encode()


def _holds_encoded_word(text: str) -> bool:
    """Whether a client could read an RFC 2047 word in ``text`` and decode it into another name (or address): such
    text goes as our own encoded words, which decode to it as it is. (Names saved before intake refused "=?".)"""
    return "=?" in text


def _one_line(name: str, *values: str) -> None:
    """The values are sanitised before; this is the last guard: none may start another header."""
    if any("\r" in value or "\n" in value for value in values):
        raise ValueError(f"the {name} header must be one line")


def _encoded_words(text: str, room: int) -> str:
    """``text`` as RFC 2047 base64 words of UTF-8 (whole characters each), one per line, each at most ``room``
    characters long."""
    per_word = (room - len("=?utf-8?b??=")) // 4 * 3  # bytes of UTF-8 whose base64 fits
    words, chunk = [], b""
    for char in text:
        encoded = char.encode()
        if len(chunk) + len(encoded) > per_word:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return f"{_CRLF} ".join(f"=?utf-8?b?{base64.b64encode(word).decode()}?=" for word in words)


def _part(content_type: str, body: str, boundary: str) -> bytes:
    encoded = base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")  # lines of 76 characters
    head = f'--{boundary}\r\nContent-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    return head.encode() + encoded


def render(content: EmailContent) -> tuple[str, str]:
    """The email's plain text and HTML, from its audience's templates (``<audience>/<kind>.txt.j2``, ``.html.j2``)."""
    name = f"{content.audience}/{content.kind}"
    text = _templates.get_template(f"{name}.txt.j2").render(content.context)
    return text, _templates.get_template(f"{name}.html.j2").render(content.context)
