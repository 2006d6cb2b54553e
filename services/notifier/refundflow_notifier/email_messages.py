"""Emails: rendered from templates, plain text and HTML, with the headers mail systems expect."""

from __future__ import annotations

import hashlib
import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from refundflow_notifier.notification_rules import EmailContent, MerchantPreferences

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html", "html.j2"]),  # our HTML templates end in .html.j2
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


class InvalidAddress(ValueError):
    """The recipient is not a deliverable email address: no server would take it."""


def message_id(event_id: uuid.UUID, kind: str, recipient: str) -> str:
    """Stable per event, kind and recipient: a resend after a crash carries the same id, so mailers can dedupe."""
    digest = hashlib.sha256(f"{kind}/{recipient.lower()}".encode()).hexdigest()[:16]
    return f"<{event_id}.{digest}@refundflow>"


def check_address(recipient: str) -> str:
    """The bare address, or InvalidAddress."""
    _, address = parseaddr(recipient)
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address) or address != recipient.strip():
        raise InvalidAddress(f"not an email address: {recipient!r}")
    return address


def sender(mail_from: str, prefs: MerchantPreferences) -> str:
    """Our address (it passes SPF/DKIM), shown under the merchant's name when it has one."""
    display, address = parseaddr(mail_from)
    name = prefs.sender_name or display
    username, _, domain = address.partition("@")
    return str(Address(display_name=name, username=username, domain=domain)) if name else address


def build_email(
    event_id: uuid.UUID, content: EmailContent, *, mail_from: str, prefs: MerchantPreferences, recipient: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender(mail_from, prefs)
    message["To"] = recipient
    if prefs.reply_to:
        message["Reply-To"] = prefs.reply_to
    message["Subject"] = content.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id(event_id, content.kind, recipient)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a notification
    message.set_content(_templates.get_template(f"{content.kind}.txt.j2").render(content.context))
    message.add_alternative(_templates.get_template(f"{content.kind}.html.j2").render(content.context), subtype="html")
    return message
