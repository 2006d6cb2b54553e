"""Whose fault an SMTP failure is: the relay's (it is away or refuses us: every message waits it out), or this
message's (a 4xx tried again on its schedule, a 5xx final)."""

from __future__ import annotations

import enum
from typing import Literal

# Where the exchange failed: before the relay took our envelope (the connection, greeting, STARTTLS, EHLO, AUTH),
# at MAIL FROM, at RCPT, at DATA; ``transaction`` is a failure without an answer after we connected.
Stage = Literal["connection", "sender", "recipient", "data", "transaction"]


class Fault(enum.Enum):
    RELAY = "relay"  # the relay is away or refuses us, whoever the recipient: wait, spend no attempt
    RETRY = "retry"  # this message, for now: its retry schedule
    REJECTED = "rejected"  # this message, for good


def fault_of(stage: Stage, code: int | None, text: str = "") -> Fault:
    """Whose fault a failure is, from where it happened and the relay's answer (``code`` None: no answer).

    A relay that says no to us before the recipient would say it for every address, so it is never the address's
    rejection; an answer at RCPT or DATA is this message's.
    """
    if stage in ("connection", "sender"):
        return Fault.RELAY
    if code is None:
        return Fault.RETRY
    return Fault.REJECTED if code >= 500 else Fault.RETRY
