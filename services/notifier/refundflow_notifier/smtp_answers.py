"""Whose fault an SMTP failure is: the relay's (it is away or refuses us: every message waits it out), or this
message's (a 4xx tried again on its schedule, a 5xx final)."""

from __future__ import annotations

import enum
import re
from typing import Literal

# Where the exchange failed: before the relay took our envelope (the connection, greeting, STARTTLS, EHLO, AUTH),
# at MAIL FROM, at RCPT, at DATA; ``transaction`` is a failure without an answer after we connected.
Stage = Literal["connection", "sender", "recipient", "data", "transaction"]

# 421: the relay is closing the connection; 530/535 (and 454, a temporary auth failure): it wants other credentials.
_RELAY_CODES = frozenset({421, 454, 530, 535})
_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# A 5.7.x at RCPT refuses us when it says so (relaying, authentication); else the address, by its own policy (a
# blocked domain, "does not accept mail from external senders"), which waiting out would never cure.
_ABOUT_US = re.compile(r"relay|authenticat", re.IGNORECASE)


class Fault(enum.Enum):
    RELAY = "relay"  # the relay is away or refuses us, whoever the recipient: wait, spend no attempt
    RETRY = "retry"  # this message, for now: its retry schedule
    REJECTED = "rejected"  # this message, for good


def fault_of(stage: Stage, code: int | None, text: str = "") -> Fault:
    """Whose fault a failure is, from where it happened and the relay's answer (``code`` None: no answer).

    A relay that says no to us (anything before the recipient, a 5.7.x policy or auth refusal at RCPT such as
    "554 5.7.1 Relay access denied", "550 5.7.1 Client was not authenticated") would say it for every address, so it
    is never the address's rejection; an answer about the recipient itself ("550 5.1.1 user unknown", a 5.7.x
    policy refusing that address) or the content at DATA is.
    """
    if stage in ("connection", "sender") or code in _RELAY_CODES:
        return Fault.RELAY
    if code is None:
        return Fault.RETRY
    enhanced = _ENHANCED.match(text)
    policy = enhanced is not None and enhanced.group(1, 2) == ("5", "7")
    if stage == "recipient" and policy and _ABOUT_US.search(text):
        return Fault.RELAY
    return Fault.REJECTED if code >= 500 else Fault.RETRY
