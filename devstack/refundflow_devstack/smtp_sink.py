"""A local SMTP server that keeps every message it receives as one .eml file (dev stack and tests)."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        final = self.directory / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        partial = final.with_suffix(".part")
        content: Any = envelope.original_content or envelope.content or b""
        partial.write_bytes(content if isinstance(content, bytes) else str(content).encode())
        partial.rename(final)  # readers never see half a message
        return "250 Message accepted for delivery"


def start_smtp_sink(directory: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    controller = Controller(MaildirHandler(directory), hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    directory = Path(os.environ.get("SMTP_SINK_DIR", "var/mail"))
    port = int(os.environ.get("SMTP_SINK_PORT", "1025"))
    controller = start_smtp_sink(directory, port=port)
    print(f"SMTP sink on 127.0.0.1:{port}, writing to {directory}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
