"""Sends email over SMTP (aiosmtplib): STARTTLS as configured, credentials only over TLS, connections reused."""

from __future__ import annotations

import asyncio
import ssl
import time
from email.utils import parseaddr

import aiosmtplib
import structlog

from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_answers import Fault, Stage, fault_of

log = structlog.get_logger(__name__)

# SMTP_TLS -> aiosmtplib's start_tls: True requires STARTTLS, None upgrades when offered, False never does.
_START_TLS = {"required": True, "opportunistic": None, "none": False}


class MailNotSent(Exception):
    """The server did not take the message. ``fault``: the relay's (away, or refusing us whoever the recipient: wait
    it out), or this message's, for now or for good (``smtp_answers.fault_of``). ``summary`` is safe to log (a
    code, never the server's text, which may quote the address); ``str()`` has the details."""

    def __init__(self, detail: str, *, summary: str, fault: Fault, stage: Stage = "connection") -> None:
        super().__init__(detail)
        self.summary, self.fault, self.stage = summary, fault, stage


class SmtpMailer:
    """Sends one message at a time per connection, keeping idle connections for the next message."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._sender = parseaddr(settings.mail_from)[1]
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # connection, when it went idle
        self._tls_context = ssl.create_default_context(cafile=settings.smtp_tls_ca_file)

    async def send(self, message: bytes, recipient: str) -> None:
        """Hand one rendered message to the server; returns once the server accepted it (250 after DATA)."""
        stage: Stage = "connection"  # until a connection is ready for our envelope
        try:
            async with asyncio.timeout(self._settings.smtp_timeout_seconds):
                smtp = self._idle_connection()
                if smtp is not None:
                    try:
                        stage = "transaction"
                        await self._send_on(smtp, message, recipient)
                        return
                    except aiosmtplib.SMTPServerDisconnected:
                        # The server dropped it while it was idle: found out here rather than by a probe before
                        # every message. (Dropped after DATA but before its answer, the message may have arrived:
                        # a duplicate, which a retry later would make too; it carries our Message-ID.)
                        log.info("smtp_idle_connection_dropped")
                stage = "connection"
                smtp = await self._connect()
                stage = "transaction"
                await self._send_on(smtp, message, recipient)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            [refused, *_] = exc.recipients
            raise _answered("recipient", refused.code, refused.message, "recipient refused: ") from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            raise _answered("sender", exc.code, exc.message) from exc
        except aiosmtplib.SMTPDataError as exc:
            raise _answered("data", exc.code, exc.message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # Refused before any recipient (greeting, EHLO, STARTTLS, AUTH): our relay refuses us, whatever the
            # address; a misconfiguration or an outage to fix.
            raise _answered("connection", exc.code, exc.message) from exc
        except TimeoutError as exc:
            fault = fault_of(stage, None)
            raise MailNotSent("the SMTP server did not finish in time", summary="smtp_timeout", fault=fault) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            fault = fault_of(stage, None)
            raise MailNotSent(f"{type(exc).__name__}: {exc}", summary="smtp_unavailable", fault=fault) from exc

    async def close(self) -> None:
        """Drop the idle connections (on shutdown)."""
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            smtp.close()

    async def _send_on(self, smtp: aiosmtplib.SMTP, message: bytes, recipient: str) -> None:
        try:
            await smtp.sendmail(self._sender, [recipient], message)
        except BaseException:
            smtp.close()  # its state is unknown: never reuse it
            raise
        self._idle.append((smtp, time.monotonic()))

    def _idle_connection(self) -> aiosmtplib.SMTP | None:
        """The most recently used idle connection still open and not idle for too long, if any."""
        while self._idle:
            smtp, since = self._idle.pop()
            if time.monotonic() - since <= self._settings.smtp_idle_seconds and smtp.is_connected:
                return smtp
            smtp.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            start_tls=_START_TLS[s.smtp_tls],
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()
            if s.smtp_username:
                if smtp.get_transport_info("sslcontext") is None and not s.smtp_allow_plaintext_auth:
                    log.error("smtp_auth_refused", why="the server did not offer STARTTLS", tls=s.smtp_tls)
                    raise aiosmtplib.SMTPException("refusing to send credentials over an unencrypted connection")
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                await smtp.login(s.smtp_username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp


def _answered(stage: Stage, code: int, text: str, context: str = "") -> MailNotSent:
    fault = fault_of(stage, code, text)
    summary = f"smtp_relay_{code}" if fault is Fault.RELAY else f"smtp_{code}"
    return MailNotSent(f"SMTP {code}: {context}{text}", summary=summary, fault=fault, stage=stage)
