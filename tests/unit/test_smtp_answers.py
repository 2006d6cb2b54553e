"""Whose fault an SMTP failure is: the relay's, or the message's."""

from __future__ import annotations

import pytest

from refundflow_notifier.smtp_answers import Fault, Stage, fault_of


@pytest.mark.parametrize(
    ("stage", "code", "text", "fault"),
    [
        ("connection", None, "", Fault.RELAY),  # refused, timed out, TLS failed
        ("connection", 535, "5.7.8 Authentication credentials invalid", Fault.RELAY),
        ("connection", 554, "no SMTP service here", Fault.RELAY),  # the greeting
        ("sender", 554, "5.7.1 sender address not verified", Fault.RELAY),
        ("sender", 451, "4.3.0 try again later", Fault.RELAY),
        ("recipient", 554, "5.7.1 <ada@example.com>: Relay access denied", Fault.RELAY),
        ("recipient", 550, "5.7.0 Authentication required", Fault.RELAY),
        ("recipient", 530, "Authentication required", Fault.RELAY),
        ("recipient", 421, "4.3.2 Service shutting down", Fault.RELAY),
        ("data", 421, "closing connection", Fault.RELAY),
        ("recipient", 550, "5.7.1 Unable to relay for ada@example.com", Fault.RELAY),
        ("recipient", 550, "5.7.1 Client was not authenticated", Fault.RELAY),
        ("recipient", 550, "5.1.1 <ada@example.com>: Recipient address rejected: User unknown", Fault.REJECTED),
        # A 5.7.x that refuses the address, not us: the recipient's policy (a blocked domain, no external senders).
        ("recipient", 554, "5.7.1 <bob@corp.example>: Recipient address rejected: Access denied", Fault.REJECTED),
        ("recipient", 550, "5.7.1 user does not accept mail from external senders", Fault.REJECTED),
        ("recipient", 553, "mailbox name not allowed", Fault.REJECTED),
        ("recipient", 451, "4.7.1 greylisted, try again", Fault.RETRY),
        ("recipient", 452, "4.2.2 mailbox full", Fault.RETRY),
        ("data", 554, "5.7.1 message refused as spam", Fault.REJECTED),
        ("data", 552, "5.3.4 message too big", Fault.REJECTED),
        ("data", 451, "4.3.0 local error", Fault.RETRY),
        ("transaction", None, "", Fault.RETRY),  # cut off after the relay took our envelope
    ],
)
def test_a_relay_refusing_us_is_the_relays_fault_and_a_refused_address_the_messages(
    stage: Stage, code: int | None, text: str, fault: Fault
) -> None:
    assert fault_of(stage, code, text) is fault
