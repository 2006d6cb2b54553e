"""Email transport: STARTTLS whenever the relay offers it (and required when configured), credentials never
in clear text, certificates checked, one connection for many messages; the relay's own refusals are retried.

The relay is a real SMTP server (aiosmtpd) that offers STARTTLS with a certificate made here and, carelessly,
AUTH even before encryption: a client that sent credentials in clear would be seen doing it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from refundflow_notifier import merchant_settings, message_queue
from refundflow_notifier.message_gauges import observe_due_messages
from refundflow_notifier.message_worker import MessageWorker
from refundflow_notifier.records import Channel
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_answers import Fault
from refundflow_notifier.smtp_mailer import MailNotSent, SmtpMailer
from refundflow_shared.events import NotificationSettingsConfigured
from refundflow_shared.metrics import MESSAGES_OLDEST_DUE_SECONDS
from tests.support.infrastructure import free_port
from tests.support.notifier_harness import notifier_database, notifier_settings
from tests.support.notifier_receivers import SMTP_PASSWORD, SMTP_USER, CapturingSmtpHandler, smtp_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def relay_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for 127.0.0.1: the relay's TLS context, and the file a client may trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp relay for tests")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("relay-tls")
    cert_file, key_file = directory / "relay.pem", directory / "relay.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


def mailer(port: int, **settings: Any) -> SmtpMailer:
    return SmtpMailer(NotifierSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_seconds=5, **settings))


def message(to: str) -> bytes:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = "refunds@refundflow.test", to, "hello"
    email.set_content("hello")
    return email.as_bytes()


@pytest.fixture
def tls_relay(relay_certificate: tuple[ssl.SSLContext, str]) -> Iterator[tuple[Any, int]]:
    with smtp_server(starttls=relay_certificate[0], with_auth=True) as relay:
        yield relay


@pytest.fixture
def plain_relay() -> Iterator[tuple[Any, int]]:
    with smtp_server(with_auth=True) as relay:
        yield relay


async def test_credentials_and_mail_go_only_after_starttls_by_default(
    tls_relay: tuple[Any, int], relay_certificate: tuple[ssl.SSLContext, str]
) -> None:
    relay, port = tls_relay
    smtp = mailer(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_tls_ca_file=relay_certificate[1])
    for n in range(3):
        await smtp.send(message(f"ada{n}@example.com"), f"ada{n}@example.com")
    await smtp.close()

    assert relay.auth_attempts == [(SMTP_USER, True)], "one login, over TLS"
    assert relay.over_tls == [True, True, True]
    assert len(relay.connections) == 1, "one connection carried the three messages"
    assert relay.noops == 0, "a reused connection costs no probe before each message"


async def test_required_tls_refuses_a_relay_without_starttls_and_sends_nothing(plain_relay: tuple[Any, int]) -> None:
    relay, port = plain_relay
    smtp = mailer(port, smtp_tls="required", smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)

    with pytest.raises(MailNotSent) as refused:
        await smtp.send(message("ada@example.com"), "ada@example.com")
    assert refused.value.fault is Fault.RELAY, "a relay's configuration can change: waited out, no attempt spent"
    assert relay.auth_attempts == [] and relay.messages == []


async def test_credentials_are_never_sent_in_clear_unless_explicitly_allowed(plain_relay: tuple[Any, int]) -> None:
    relay, port = plain_relay
    careful = mailer(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)  # opportunistic TLS
    with pytest.raises(MailNotSent):
        await careful.send(message("ada@example.com"), "ada@example.com")
    assert relay.auth_attempts == [] and relay.messages == []

    allowed = mailer(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_allow_plaintext_auth=True)
    await allowed.send(message("ada@example.com"), "ada@example.com")
    await allowed.close()
    assert relay.auth_attempts == [(SMTP_USER, False)] and relay.over_tls == [False]


async def test_a_relay_certificate_nobody_vouches_for_is_refused(tls_relay: tuple[Any, int]) -> None:
    relay, port = tls_relay
    smtp = mailer(port, smtp_tls="required", smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)

    with pytest.raises(MailNotSent):
        await smtp.send(message("ada@example.com"), "ada@example.com")
    assert relay.auth_attempts == [] and relay.messages == []


async def test_a_connection_the_relay_dropped_is_replaced_without_losing_the_message() -> None:
    with smtp_server() as (first_relay, port):
        smtp = mailer(port)
        await smtp.send(message("first@example.com"), "first@example.com")
    with smtp_server(port=port) as (second_relay, _):  # a restarted relay: the idle connection is dead
        await smtp.send(message("second@example.com"), "second@example.com")
        await smtp.close()
    assert [m["To"] for m in first_relay.messages] == ["first@example.com"]
    assert [m["To"] for m in second_relay.messages] == ["second@example.com"]


class UnverifiedSenderHandler(CapturingSmtpHandler):
    """A relay that no longer sends for our address (a provider's "sender not verified")."""

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        return "554 5.7.1 sender address not verified"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with notifier_database(postgres_url) as pool:
        yield pool


class RelayAccessDeniedHandler(CapturingSmtpHandler):
    """A relay that takes our envelope but will not relay for us (a lapsed allow-list, an expired relay grant)."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        return f"554 5.7.1 <{address}>: Relay access denied"


async def queue_customer_emails(pool: asyncpg.Pool, merchant_id: str, recipients: list[str]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        team = NotificationSettingsConfigured(merchant_id=merchant_id, team_email="team@acme.example")
        await merchant_settings.save(conn, team, at=datetime.datetime.now(datetime.UTC), sequence=1)
        emails = [
            message_queue.QueuedMessage(uuid.uuid4(), merchant_id, Channel.EMAIL, "refund_approved", to, message(to))
            for to in recipients
        ]
        await message_queue.queue(conn, emails)


async def send_what_is_due(pool: asyncpg.Pool, worker: MessageWorker) -> None:
    for claimed in await message_queue.claim_due(pool, 10, [], lease_seconds=30, per_merchant=8):
        await worker.send(claimed)


async def assert_waiting_for_the_relay(pool: asyncpg.Pool, recipients: list[str]) -> None:
    rows = await pool.fetch(
        "SELECT recipient, status, attempts, body IS NOT NULL AS kept, next_attempt_at <= now() AS due"
        " FROM messages ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [(to, "pending", 0, True, True) for to in recipients], (
        "the relay's problem, not the message's: no attempt spent, due as soon as the relay takes mail again"
    )


@pytest.mark.parametrize(
    ("handler", "password"),
    [
        (CapturingSmtpHandler, "a-rotated-password"),
        (UnverifiedSenderHandler, SMTP_PASSWORD),
        (RelayAccessDeniedHandler, SMTP_PASSWORD),
    ],
    ids=["auth_refused_535", "mail_from_refused_554", "rcpt_relay_access_denied_554_5_7_1"],
)
async def test_a_relay_refusing_us_leaves_every_customer_email_waiting_and_blames_no_address(
    pool: asyncpg.Pool, handler: type[CapturingSmtpHandler], password: str
) -> None:
    recipients = ["ada@example.com", "bob@example.com"]
    await queue_customer_emails(pool, "mer_1", recipients)
    with smtp_server(handler=handler(), with_auth=True) as (relay, port):
        settings = notifier_settings(
            "postgresql://unused/notifier",
            "unused:9092",
            port,
            smtp_username=SMTP_USER,
            smtp_password=password,
            smtp_allow_plaintext_auth=True,
            message_retry_schedule_seconds=[0, 0],
        )
        smtp = SmtpMailer(settings)
        worker = MessageWorker(pool, settings, smtp, None, None)  # type: ignore[arg-type] # email only
        try:
            for _ in range(3):  # more tries than the schedule has
                await send_what_is_due(pool, worker)
        finally:
            await smtp.close()

    assert relay.messages == []
    await assert_waiting_for_the_relay(pool, recipients)
    assert worker.relay_pause.remaining() > 0, "the worker waits the relay out"


async def test_a_relay_that_is_down_for_longer_than_the_schedule_loses_no_email(pool: asyncpg.Pool) -> None:
    await queue_customer_emails(pool, "mer_1", ["ada@example.com"])
    port = free_port()  # nothing listens: the relay is down
    settings = notifier_settings(
        "postgresql://unused/notifier", "unused:9092", port, message_retry_schedule_seconds=[0, 0]
    )
    worker = MessageWorker(pool, settings, SmtpMailer(settings), None, None)  # type: ignore[arg-type] # email only
    for _ in range(3):
        await send_what_is_due(pool, worker)
    await assert_waiting_for_the_relay(pool, ["ada@example.com"])

    with smtp_server(port=port) as (relay, _):  # back up
        await send_what_is_due(pool, worker)
    assert [m["To"] for m in relay.messages] == ["ada@example.com"]
    assert await pool.fetchval("SELECT status FROM messages") == "sent"
    assert worker.relay_pause.remaining() == 0, "a message the relay took ends the wait"


async def test_emails_held_up_by_the_relay_show_as_the_age_of_the_oldest_due_message(pool: asyncpg.Pool) -> None:
    await observe_due_messages(pool)
    assert MESSAGES_OLDEST_DUE_SECONDS._value.get() == 0, "nothing due: nothing overdue"
    await queue_customer_emails(pool, "mer_1", ["ada@example.com", "bob@example.com"])
    await pool.execute("UPDATE messages SET next_attempt_at = now() - interval '10 minutes' WHERE id = 1")
    await pool.execute("UPDATE messages SET next_attempt_at = now() + interval '1 hour' WHERE id = 2")  # not due yet

    await observe_due_messages(pool)
    assert 600 <= MESSAGES_OLDEST_DUE_SECONDS._value.get() < 660


class OneAddressDeniedHandler(CapturingSmtpHandler):
    """A relay that will not relay to one recipient's domain (it says "Relay access denied", as it would to us) and
    takes the others."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("blocked@"):
            return f"554 5.7.1 <{address}>: Relay access denied"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


async def test_a_relay_refusing_one_address_while_it_takes_the_others_rejects_that_email_and_stalls_none(
    pool: asyncpg.Pool,
) -> None:
    """A 5.7.x at RCPT is waited out as the relay's refusal of us; but once the relay has taken other mail since it
    refused this address, the refusal is the address's: waited out for ever, it would pause every email each time
    that one came round."""
    recipients = ["ada@example.com", "blocked@example.com", "bob@example.com"]
    await queue_customer_emails(pool, "mer_1", recipients)
    with smtp_server(handler=OneAddressDeniedHandler()) as (relay, port):
        settings = notifier_settings(
            "postgresql://unused/notifier", "unused:9092", port, message_retry_schedule_seconds=[0, 0, 0, 0]
        )
        smtp = SmtpMailer(settings)
        worker = MessageWorker(pool, settings, smtp, None, None)  # type: ignore[arg-type] # email only
        try:
            for _ in range(3):
                await send_what_is_due(pool, worker)
        finally:
            await smtp.close()

    customers = sorted(m["To"] for m in relay.messages if m["To"].endswith("@example.com"))
    assert customers == ["ada@example.com", "bob@example.com"]
    rows = await pool.fetch("SELECT recipient, status FROM messages WHERE kind = 'refund_approved' ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("ada@example.com", "sent"),
        ("blocked@example.com", "rejected"),
        ("bob@example.com", "sent"),
    ]
    assert worker.relay_pause.remaining() == 0, "the relay takes mail: nothing waits"
