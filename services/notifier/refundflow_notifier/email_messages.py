"""Customer emails: rendered from templates, plain text and HTML, with the headers mail systems expect."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from refundflow_shared.events import Event

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class EmailContent:
    kind: str
    subject: str
    context: dict[str, Any]


def message_id(event: Event, recipient: str) -> str:
    """Stable per event and recipient: a resend after a crash carries the same id, so mailers can dedupe."""
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:16]
    return f"<{event.id}.{digest}@refundflow>"


def build_email(event: Event, content: EmailContent, *, sender: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = content.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id(event, recipient)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a notification
    message.set_content(_templates.get_template(f"{content.kind}.txt.j2").render(content.context))
    message.add_alternative(_templates.get_template(f"{content.kind}.html.j2").render(content.context), subtype="html")
    return message
