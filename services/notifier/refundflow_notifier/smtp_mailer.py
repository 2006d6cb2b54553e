"""Sends email over SMTP (aiosmtplib)."""

from __future__ import annotations

from email.utils import parseaddr

import aiosmtplib

from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.consumer import TransientError


class RecipientRejected(Exception):
    """The server refused the message for good (5xx): retrying will not deliver it."""


class SmtpMailer:
    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings

    async def send(self, message: bytes, recipient: str) -> None:
        """Hand one rendered message to the server; returns once the server accepted it (250 after DATA)."""
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                sender=parseaddr(s.mail_from)[1],
                recipients=[recipient],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                start_tls=s.smtp_starttls,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(400 <= r.code < 500 for r in exc.recipients):
                raise TransientError(f"recipient deferred: {exc}") from exc
            raise RecipientRejected(str(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TransientError(f"SMTP {exc.code}: {exc.message}") from exc
            raise RecipientRejected(f"SMTP {exc.code}: {exc.message}") from exc
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise TransientError(f"SMTP server unreachable: {exc}") from exc
