"""A local SMTP server that keeps every message it receives as one .eml file (dev stack, bench and tests).

Just enough SMTP (RFC 5321) for a client that sends: EHLO or HELO, then MAIL, RCPT, DATA, RSET, NOOP and QUIT, on
one connection for many messages. It shares the machine with the stack it receives from, so it parses no more than
it must (aiosmtpd, used before, spent about 0.7 ms of CPU per message, most of it parsing addresses it then kept).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

MAX_MESSAGE_BYTES = 32 * 2**20
MAX_COMMAND_BYTES = 2048  # a command line is at most 512 octets, with extensions' parameters a little more
_EHLO_REPLY = b"250-refundflow-sink\r\n250-SIZE %d\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n" % MAX_MESSAGE_BYTES
_END_OF_DATA = b"\r\n.\r\n"  # the line holding only a period (the data is read as if it began with a line end)


class Maildir:
    """Where messages go: one file each, named by arrival, written whole before it appears."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def keep(self, message: bytes) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        final = self.directory / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        partial = final.with_suffix(".part")
        partial.write_bytes(message)
        partial.rename(final)  # readers never see half a message


class _Session(asyncio.Protocol):
    """One client connection: commands line by line, then a message's data up to its lone ``.`` line."""

    def __init__(self, maildir: Maildir, sessions: set[_Session]) -> None:
        self._maildir, self._sessions = maildir, sessions
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._greeted = False
        self._has_sender = False
        self._recipients = 0
        self._reading_data = False
        self._scanned = 0  # how far the data was searched for its end, so a long message is searched once
        self._oversized = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self._sessions.add(self)
        self._reply(b"220 refundflow-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            if not (self._read_data() if self._reading_data else self._read_command()):
                return

    def _read_command(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end > MAX_COMMAND_BYTES or (end < 0 and len(self._buffer) > MAX_COMMAND_BYTES):
            self._close(b"500 Line too long")
            return False
        if end < 0:
            return False
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        self._command(line)
        return True

    def _command(self, line: bytes) -> None:
        verb, _, argument = line.partition(b" ")
        match verb.upper():
            case b"EHLO":
                self._greeted = True
                self._reset()
                self._reply(_EHLO_REPLY)
            case b"HELO":
                self._greeted = True
                self._reset()
                self._reply(b"250 refundflow-sink\r\n")
            case b"MAIL" | b"RCPT" | b"DATA" if not self._greeted:
                self._reply(b"503 Error: send HELO first\r\n")
            case b"MAIL" if not argument.upper().startswith(b"FROM:"):
                self._reply(b"501 Syntax: MAIL FROM:<address>\r\n")
            case b"MAIL" if self._has_sender:
                self._reply(b"503 Error: nested MAIL command\r\n")
            case b"MAIL":
                self._has_sender = True
                self._reply(b"250 OK\r\n")
            case b"RCPT" if not self._has_sender:
                self._reply(b"503 Error: need MAIL command\r\n")
            case b"RCPT" if not argument.upper().startswith(b"TO:"):
                self._reply(b"501 Syntax: RCPT TO:<address>\r\n")
            case b"RCPT":
                self._recipients += 1
                self._reply(b"250 OK\r\n")
            case b"DATA" if not self._recipients:
                self._reply(b"503 Error: need RCPT command\r\n")
            case b"DATA":
                self._reading_data, self._scanned, self._oversized = True, 0, False
                self._buffer[0:0] = b"\r\n"  # so the end is found the same way when the data is empty
                self._reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            case b"RSET":
                self._reset()
                self._reply(b"250 OK\r\n")
            case b"NOOP":
                self._reply(b"250 OK\r\n")
            case b"QUIT":
                self._close(b"221 Bye")
            case _:
                self._reply(b"500 Error: command not recognized\r\n")

    def _read_data(self) -> bool:
        found = self._buffer.find(_END_OF_DATA, max(self._scanned - len(_END_OF_DATA), 0))
        if found < 0:
            self._scanned = len(self._buffer)
            if self._scanned > MAX_MESSAGE_BYTES:  # read on to the end, but keep only what may begin the end line
                self._oversized = True
                del self._buffer[: 1 - len(_END_OF_DATA)]
                self._scanned = len(self._buffer)
            return False
        data = bytes(self._buffer[: found + 2])  # from the line end put before it to its last line's end
        del self._buffer[: found + len(_END_OF_DATA)]
        self._reading_data = False
        if self._oversized or len(data) - 2 > MAX_MESSAGE_BYTES:
            self._reply(b"552 Error: too much mail data\r\n")
        else:
            self._keep(data)
        self._reset()
        return True

    def _keep(self, data: bytes) -> None:
        try:
            # A line that starts with a period was sent with one more (RFC 5321 4.5.2): take it off.
            self._maildir.keep(data.replace(b"\r\n.", b"\r\n")[2:])
        except OSError as exc:  # a full disk, say: the client hears it may try again later
            print(f"smtp sink: could not keep a message: {exc!r}", file=sys.stderr, flush=True)
            self._reply(b"451 Error: could not keep the message\r\n")
        else:
            self._reply(b"250 Message accepted for delivery\r\n")

    def _reset(self) -> None:
        self._has_sender, self._recipients = False, 0

    def _reply(self, reply: bytes) -> None:
        assert self._transport is not None
        self._transport.write(reply)

    def _close(self, reply: bytes) -> None:
        assert self._transport is not None
        self._transport.write(reply + b"\r\n")
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._sessions.discard(self)

    def disconnect(self) -> None:
        if self._transport is not None:
            self._transport.close()


class SmtpSink:
    """The server, on its own event loop in a thread (tests start it from within theirs)."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        self._maildir = Maildir(directory)
        self._host, self._port = host, port
        self._sessions: set[_Session] = set()
        self._loop = _event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-sink", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        listening = self._loop.create_server(lambda: _Session(self._maildir, self._sessions), self._host, self._port)
        self._server = asyncio.run_coroutine_threadsafe(listening, self._loop).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for session in list(self._sessions):
                session.disconnect()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _event_loop() -> asyncio.AbstractEventLoop:
    if sys.platform == "win32":
        return asyncio.new_event_loop()
    import uvloop  # a dependency of refundflow-shared, except on Windows

    return uvloop.new_event_loop()


def start_smtp_sink(directory: Path, host: str = "127.0.0.1", port: int = 1025) -> SmtpSink:
    sink = SmtpSink(directory, host, port)
    sink.start()
    return sink


def main() -> None:
    directory = Path(os.environ.get("SMTP_SINK_DIR", "var/mail"))
    port = int(os.environ.get("SMTP_SINK_PORT", "1025"))
    sink = start_smtp_sink(directory, port=port)
    print(f"SMTP sink on 127.0.0.1:{port}, writing to {directory}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.stop()
