"""The notifier's pure rules: amounts, the retry schedule, signatures, secrets, alerts and email headers."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from refundflow_notifier.email_messages import (
    InvalidAddress,
    build_email,
    check_address,
    dated,
    header_text,
    message_id,
    render,
)
from refundflow_notifier.notification_rules import (
    ALERT_ONLY_EVENT_TYPES,
    EmailContent,
    MerchantPreferences,
    TeamAlert,
    team_alerts,
)
from refundflow_notifier.retry_schedule import disables_endpoint, is_success, next_delay
from refundflow_notifier.settings import DEFAULT_WEBHOOK_SCHEDULE, NotifierSettings
from refundflow_notifier.webhook_signing import new_signing_secret, signed_headers
from refundflow_shared.events import (
    EVENT_DATA_TYPES,
    WEBHOOK_EVENT_TYPES,
    RefundRequested,
    RefundReviewOverdue,
    TeamAlertRaised,
)
from refundflow_shared.money import format_amount
from refundflow_shared.secret_box import SecretBox, SecretBoxError, generate_key


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (4999, "EUR", "€49.99"),
        (123456789, "USD", "$1,234,567.89"),
        (5, "GBP", "£0.05"),
        (1500, "JPY", "¥1,500"),
        (1250, "KWD", "KWD 1.250"),
        (1000001, "BHD", "BHD 1,000.001"),
        (12345, "CHF", "CHF 123.45"),
        (0, "KRW", "₩0"),
    ],
)
def test_amounts_show_the_currencys_decimals_and_grouped_thousands(amount: int, currency: str, shown: str) -> None:
    assert format_amount(amount, currency) == shown


def test_the_webhook_schedule_starts_at_once_then_backs_off_and_ends() -> None:
    schedule = DEFAULT_WEBHOOK_SCHEDULE
    assert next_delay(schedule, 0) == 0
    assert [next_delay(schedule, n) for n in range(1, 8)] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert next_delay(schedule, 8) is None, "eight attempts, then the delivery has failed"


def test_only_2xx_succeeds_and_only_410_disables() -> None:
    assert is_success(200) and is_success(204) and not is_success(301) and not is_success(500)
    assert disables_endpoint(410) and not disables_endpoint(404) and not disables_endpoint(500)


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    payload = '{"id":"evt_1","sequence":3}'
    headers = signed_headers([secret], "evt_1", datetime.now(UTC), payload)
    assert Webhook(secret).verify(payload, headers) == {"id": "evt_1", "sequence": 3}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_signing_secret()).verify(payload, headers)


def test_during_a_rolls_overlap_either_secret_verifies() -> None:
    new, previous = new_signing_secret(), new_signing_secret()
    payload = '{"id":"evt_1"}'
    headers = signed_headers([new, previous], "evt_1", datetime.now(UTC), payload)
    assert headers["webhook-signature"].count("v1,") == 2
    for either in (new, previous):
        assert Webhook(either).verify(payload, headers) == {"id": "evt_1"}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_signing_secret()).verify(payload, headers)


def test_a_sealed_secret_opens_only_with_the_key_and_for_its_endpoint() -> None:
    box = SecretBox(generate_key())
    sealed = box.seal("whsec_abc", context="we_1")
    assert "whsec_abc" not in sealed
    assert box.open(sealed, context="we_1") == "whsec_abc"
    with pytest.raises(SecretBoxError):
        box.open(sealed, context="we_2")
    with pytest.raises(SecretBoxError):
        SecretBox(generate_key()).open(sealed, context="we_1")


def test_addresses_no_server_would_take_are_refused_before_sending() -> None:
    assert check_address("ada@example.com") == "ada@example.com"
    for bad in (
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@localhost",
        "ada lovelace@example.com",
        "ada@exämple.com",
        "ada@example.com\r\nBcc: eve@example.com",
    ):
        with pytest.raises(InvalidAddress):
            check_address(bad)


def test_an_overdue_review_alerts_the_team_with_the_target() -> None:
    overdue = RefundReviewOverdue(
        merchant_id="m",
        payment_id="p",
        refund_id="r",
        amount=1500,
        currency="JPY",
        requested_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        review_target_hours=48,
    )
    [alert] = team_alerts(overdue)
    assert alert.title == "Refund review overdue: ¥1,500"
    assert "review target: 48 hours" in alert.slack_text()


def test_a_request_the_merchants_rules_approved_at_once_asks_the_team_for_no_review() -> None:
    asked = {
        "merchant_id": "m",
        "payment_id": "p",
        "refund_id": "r",
        "customer_email": "ada@example.com",
        "amount": 4999,
        "currency": "EUR",
        "reason": "requested_by_customer",
    }
    [to_review] = team_alerts(RefundRequested(**asked))
    assert to_review.title == "New refund request to review: €49.99"
    assert team_alerts(RefundRequested(**asked, auto_approved=True)) == [], "refund.approved tells the team of it"


def test_every_event_the_notifier_speaks_about_is_in_the_contract() -> None:
    assert set(WEBHOOK_EVENT_TYPES) | set(ALERT_ONLY_EVENT_TYPES) <= set(EVENT_DATA_TYPES)


def test_a_raised_team_alert_is_rendered_with_its_refund_payment_and_details() -> None:
    raised = TeamAlertRaised(
        merchant_id="m",
        kind="refund_stuck",
        title="A refund needs a person",
        details={"why": "the provider keeps answering 500", "since": "2026-11-20"},
        refund_id="ref_1",
    )
    [alert] = team_alerts(raised)
    assert (alert.kind, alert.title) == ("refund_stuck", "A refund needs a person")
    assert alert.slack_text().splitlines() == [
        "A refund needs a person",
        "• refund: ref_1",
        "• why: the provider keeps answering 500",
        "• since: 2026-11-20",
    ]


def test_slack_text_cannot_mention_the_channel_or_smuggle_a_link() -> None:
    alert = TeamAlert("k", "Hello <!channel>", {"note": "<https://evil.example|your bank> & more"})
    text = alert.slack_text()
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "&amp; more" in text


def test_merchant_set_header_values_cannot_break_or_spoof_a_header() -> None:
    prefs = MerchantPreferences(
        review_target="soon",
        sender_name="Bank\r\nBcc: victim@example.com\u202e Security",
        reply_to="attacker@evil.example\r\nX-Injected: 1",
    )
    content = EmailContent("team_alert", "About\r\nyour refund", {"title": "t", "details": {}}, audience="team")
    built = build_email(
        uuid.uuid4(), content, mail_from="Refundflow <refunds@rf.example>", prefs=prefs, recipient="a@example.com"
    )
    raw = built.data.decode("ascii")
    assert "\nBcc:" not in raw and "X-Injected" not in raw and "\u202e" not in raw
    message = email.message_from_bytes(built.data, policy=email.policy.default)  # as a mail client reads it
    assert isinstance(message, EmailMessage)
    assert message["From"].addresses[0].display_name == "Bank Bcc: victim@example.com Security via Refundflow"
    assert message["From"].addresses[0].addr_spec == "refunds@rf.example", "always our own address"
    assert message["Reply-To"] is None, "an unusable Reply-To is left out, the email still goes"
    assert message["Subject"] == "About your refund"
    assert header_text("A\x00B\tC  D") == "AB C D"


def test_an_email_reads_back_as_exactly_its_text_and_its_html() -> None:
    """Whatever the content holds (here lines that look like MIME boundaries), a mail client finds two parts."""
    content = EmailContent(
        "team_alert", "Alert", {"title": "--=_0\n--=_0--", "details": {"note": "=_\r\n.\r\n"}}, audience="team"
    )
    prefs = MerchantPreferences(review_target="soon")
    built = build_email(uuid.uuid4(), content, mail_from="r@rf.example", prefs=prefs, recipient="a@example.com")
    message = email.message_from_bytes(built.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage) and message.get_content_type() == "multipart/alternative"
    parts = [(part.get_content_type(), part.get_content()) for part in message.iter_parts()]
    text, html = render(content)
    assert parts == [("text/plain", text), ("text/html", html)]


@pytest.mark.parametrize("domain", ["refundflow.example", "notifications.payments-platform.example"])
def test_a_message_id_stays_on_its_line_as_built(domain: str) -> None:
    """Folded onto a line of its own (78 characters), a Message-ID reads back with the fold's space before it (even
    by Python's own parser), so a receiver comparing it to ours, or threading by it, does not find it."""
    content = EmailContent("team_alert", "Refund failed", {"title": "t", "details": {}}, audience="team")
    built = build_email(
        uuid.uuid4(),
        content,
        mail_from=f"Refundflow <refunds@{domain}>",
        prefs=MerchantPreferences(review_target="soon"),
        recipient="a@b.example",
    )
    head, _, _ = built.data.partition(b"\r\n\r\n")
    [line] = [line for line in head.split(b"\r\n") if line.startswith(b"Message-ID:")]
    assert line == f"Message-ID: {built.message_id}".encode()
    assert built.message_id.endswith(f"@{domain}>")


def test_an_email_goes_out_as_ascii_crlf_lines_with_every_header_read_back() -> None:
    """Written out without the email package: non-ASCII values become RFC 2047 words, a long subject is folded
    (lines of at most 78 characters), every line ends in CRLF, and a mail client reads back what was meant."""
    event_id = uuid.uuid4()
    prefs = MerchantPreferences(review_target="soon", sender_name="Zoë's Café", reply_to="help@zoe.example")
    subject = "Votre remboursement de 25,00 € est en route, " + "à bientôt " * 30
    content = EmailContent("team_alert", subject, {"title": "Tëst", "details": {}}, audience="team")
    built = build_email(
        event_id, content, mail_from="Refundflow <refunds@rf.example>", prefs=prefs, recipient="a@b.example"
    )
    assert built.data.isascii()
    head, _, _ = built.data.partition(b"\r\n\r\n")
    bare = built.data.replace(b"\r\n", b"")
    assert b"\n" not in bare and b"\r" not in bare, "every line ends in CRLF"
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    message = email.message_from_bytes(built.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == header_text(subject, 250)
    assert message["From"].addresses[0].display_name == "Zoë's Café via Refundflow"
    assert message["From"].addresses[0].addr_spec == "refunds@rf.example"
    assert (message["To"], message["Reply-To"]) == ("a@b.example", "help@zoe.example")
    mid = message_id(event_id, "team_alert", "a@b.example", "Refundflow <refunds@rf.example>")
    assert message["Message-ID"] == built.message_id == mid and mid.endswith("@rf.example>")
    assert (message["MIME-Version"], message["Auto-Submitted"]) == ("1.0", "auto-generated")
    assert message["Date"] is None, "dated as it is sent"
    once = dated(built.data)
    assert email.message_from_bytes(once, policy=email.policy.default)["Date"].datetime.tzinfo is not None
    assert dated(once) == once, "one Date, also on a message queued with it"
    text, html = render(content)
    assert [part.get_content() for part in message.iter_parts()] == [text, html]


@settings(max_examples=100, deadline=None)
@given(subject=st.text(min_size=1, max_size=300), sender_name=st.text(max_size=120))
@example(subject="Refund", sender_name="Bäckerei Müller & Söhne, Fachgeschäft für Brot und Feingebäck seit 1887")
@example(subject="Refund", sender_name="Acme-International-Holdings-Worldwide-Distribution-Services-Limited")
@example(subject="Refund", sender_name="Acme, Inc. (the International Holdings, Worldwide Distribution Services)")
@example(subject="Refund", sender_name='The "Best" Shop \\ Co')
@example(subject="=?utf-8?b?T2s=?=", sender_name="=?utf-8?b?IlBheVBhbCIgPHNlcnZpY2VAcGF5cGFsLmNvbT4=?=")
def test_any_subject_and_sender_name_read_back_as_sent(subject: str, sender_name: str) -> None:
    """Whatever text a merchant or an event brings, the header lines stay within 78 characters, no RFC 2047 word
    is longer than its limit of 75, and a mail client reads back the cleaned-up text."""
    prefs = MerchantPreferences(review_target="soon", sender_name=sender_name)
    content = EmailContent("team_alert", subject, {"title": "t", "details": {}}, audience="team")
    built = build_email(uuid.uuid4(), content, mail_from="r@rf.example", prefs=prefs, recipient="a@b.example")
    head = built.data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert built.data.isascii()
    assert all(len(line) <= 78 for line in head)
    assert all(len(word) <= 75 for word in re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", built.data))
    message = email.message_from_bytes(built.data, policy=email.policy.default)
    assert message["Subject"] == header_text(subject, 250)
    merchant = header_text(sender_name, 100)
    assert display_name_as_rfc_2047_reads_it(built.data) == (f"{merchant} via Refundflow" if merchant else "Refundflow")


def display_name_as_rfc_2047_reads_it(data: bytes) -> str:
    """The From header's display name, read as RFC 2047 says: the space between two encoded words is no part of
    the text. (Python's address parser keeps it, so it cannot be the judge of a name split into several words.)"""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["From"].replace("\r\n", "")
    phrase = raw.rpartition(" <")[0].strip()
    if phrase.startswith('"'):
        return unquote(phrase)
    return str(make_header(decode_header(phrase)))


def test_credentials_with_tls_off_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="clear text"):
        NotifierSettings(smtp_tls="none", smtp_username="refundflow")
    assert NotifierSettings(smtp_tls="none").smtp_tls == "none", "a local sink needs neither"
    assert NotifierSettings().smtp_tls == "opportunistic"
