"""The dev stack's SMTP sink: what clients send arrives whole, one file per message; what breaks the protocol is
refused with SMTP's own codes, and the connection goes on."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import aiosmtplib
import pytest

from refundflow_devstack import smtp_sink
from refundflow_devstack.smtp_sink import start_smtp_sink
from tests.support.infrastructure import free_port


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, mail = free_port(), tmp_path / "mail"
    running = start_smtp_sink(mail, port=port)
    try:
        yield port, mail
    finally:
        running.stop()


def _kept(mail: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(mail.glob("*.eml"))]


class _Wire:
    """A raw client: send lines, read the reply to each."""

    def __init__(self, port: int) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._reader = self._socket.makefile("rb")
        assert self.reply().startswith(b"220")

    def send(self, data: bytes) -> None:
        self._socket.sendall(data)

    def reply(self) -> bytes:
        lines = [self._reader.readline()]
        while lines[-1][3:4] == b"-":  # a multi-line reply goes on while its lines say "250-"
            lines.append(self._reader.readline())
        return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self._reader.close()
        self._socket.close()


def test_messages_on_one_connection_are_kept_whole_with_their_periods(sink: tuple[int, Path]) -> None:
    port, mail = sink
    first = "Subject: first\r\n\r\nA line.\r\n.A line that starts with a period\r\n.\r\n..\r\nThe end\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail("shop@example.com", ["ada@example.com"], first)
        client.sendmail("shop@example.com", ["bob@example.com", "eve@example.com"], "Subject: second\r\n\r\nHi\r\n")
        client.sendmail("shop@example.com", ["ada@example.com"], "")
    assert _kept(mail) == [first.encode(), b"Subject: second\r\n\r\nHi\r\n", b"\r\n"]
    assert not list(mail.glob("*.part")), "only whole messages are left"


async def test_the_notifiers_client_sends_through_it(sink: tuple[int, Path]) -> None:
    port, mail = sink
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Acme <shop@example.com>", "zoë@example.com", "Déjà vu"
    message.set_content("Your refund of €49.99 is on its way.\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        for _ in range(2):
            await client.send_message(message)  # non-ASCII address: sent with SMTPUTF8, which the sink offers
    kept = [message_from_bytes(raw, policy=default) for raw in _kept(mail)]
    assert len(kept) == 2
    assert kept[0]["To"] == "zoë@example.com" and kept[0]["Subject"] == "Déjà vu"
    assert kept[0].get_content().splitlines() == ["Your refund of €49.99 is on its way."]


def test_commands_out_of_order_are_refused_and_the_connection_goes_on(sink: tuple[int, Path]) -> None:
    port, mail = sink
    wire = _Wire(port)
    try:
        assert wire.command(b"MAIL FROM:<shop@example.com>").startswith(b"503")  # no EHLO yet
        assert b"250 SMTPUTF8" in wire.command(b"EHLO client.example")
        assert wire.command(b"RCPT TO:<ada@example.com>").startswith(b"503")  # no MAIL yet
        assert wire.command(b"DATA").startswith(b"503")
        assert wire.command(b"MAIL shop@example.com").startswith(b"501")
        assert wire.command(b"MAIL FROM:<shop@example.com>").startswith(b"250")
        assert wire.command(b"MAIL FROM:<shop@example.com>").startswith(b"503")  # nested
        assert wire.command(b"DATA").startswith(b"503")  # no recipient yet
        assert wire.command(b"TURN").startswith(b"500")
        assert wire.command(b"RSET").startswith(b"250")
        assert wire.command(b"RCPT TO:<ada@example.com>").startswith(b"503"), "RSET forgot the sender"
        assert wire.command(b"NOOP").startswith(b"250")
        assert wire.command(b"mail from:<shop@example.com>").startswith(b"250"), "verbs in any case"
        assert wire.command(b"RCPT TO:<ada@example.com>").startswith(b"250")
        assert wire.command(b"DATA").startswith(b"354")
        # The end line arrives a byte at a time, and an end-like sequence inside a line is not the end.
        wire.send(b"Subject: slow\r\n\r\nnot the end: .\r\n")
        for byte in b".\r\n":
            wire.send(bytes([byte]))
        assert wire.reply().startswith(b"250")
        assert wire.command(b"QUIT").startswith(b"221")
    finally:
        wire.close()
    assert _kept(mail) == [b"Subject: slow\r\n\r\nnot the end: .\r\n"]


def test_a_message_over_the_size_limit_is_refused_and_nothing_of_it_is_kept(
    sink: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, mail = sink
    monkeypatch.setattr(smtp_sink, "MAX_MESSAGE_BYTES", 4096)
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("shop@example.com", ["ada@example.com"], "Subject: big\r\n\r\n" + ("y" * 70 + "\r\n") * 200)
        assert refused.value.smtp_code == 552
        client.sendmail("shop@example.com", ["ada@example.com"], "Subject: small\r\n\r\nfits\r\n")
    assert _kept(mail) == [b"Subject: small\r\n\r\nfits\r\n"]


def test_a_command_line_that_never_ends_is_cut_off(sink: tuple[int, Path]) -> None:
    port, _ = sink
    wire = _Wire(port)
    try:
        wire.send(b"EHLO " + b"a" * 10_000)
        assert wire.reply().startswith(b"500")
        assert wire.reply() == b"", "the sink closed the connection"
    finally:
        wire.close()


def test_a_message_that_cannot_be_written_is_refused_for_now(sink: tuple[int, Path]) -> None:
    port, mail = sink
    mail.rmdir()
    mail.write_text("a file where the mail directory was: nothing can be written in it")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("shop@example.com", ["ada@example.com"], "Subject: lost?\r\n\r\nno\r\n")
        assert refused.value.smtp_code == 451, "a temporary failure: the client keeps the message and tries again"
        mail.unlink()
        mail.mkdir()
        client.sendmail("shop@example.com", ["ada@example.com"], "Subject: again\r\n\r\nyes\r\n")
    assert _kept(mail) == [b"Subject: again\r\n\r\nyes\r\n"]
