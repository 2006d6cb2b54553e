"""What the notifier does with refund events: one email per event and recipient."""

from __future__ import annotations

import asyncpg
import structlog
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.events import Event, RefundSucceeded
from refundflow_shared.money import Money

from refundflow_notifier.email_messages import EmailContent, build_email
from refundflow_notifier.settings import NotifierSettings
from refundflow_notifier.smtp_mailer import RecipientRejected, SmtpMailer

log = structlog.get_logger(__name__)


async def send_once(
    conn: asyncpg.Connection,
    mailer: SmtpMailer,
    settings: NotifierSettings,
    event: Event,
    recipient: str,
    content: EmailContent,
    refund_id: str | None,
) -> None:
    """Record, then send, in the inbox transaction: a failure to send rolls the record back for a retry.

    The one window left is a crash after the SMTP server accepted the message and before this commits:
    the message is sent again on redelivery, with the same Message-ID.
    """
    message = build_email(event, content, sender=settings.mail_from, recipient=recipient)
    inserted = await conn.execute(
        "INSERT INTO emails (event_id, recipient, kind, message_id, status, refund_id)"
        " VALUES ($1, $2, $3, $4, 'sent', $5) ON CONFLICT DO NOTHING",
        event.id,
        recipient,
        content.kind,
        message["Message-ID"],
        refund_id,
    )
    if inserted != "INSERT 0 1":
        return
    try:
        await mailer.send(message)
    except RecipientRejected as exc:
        log.error("email_rejected", kind=content.kind, error=str(exc))
        await conn.execute(
            "UPDATE emails SET status = 'rejected', error = $3 WHERE event_id = $1 AND recipient = $2",
            event.id,
            recipient,
            str(exc),
        )
        return
    log.info("email_sent", kind=content.kind, message_id=message["Message-ID"])


def register(consumer: EventConsumer, mailer: SmtpMailer, settings: NotifierSettings) -> None:
    @consumer.handles(RefundSucceeded)
    async def refund_succeeded(conn: asyncpg.Connection, event: Event, data: RefundSucceeded) -> None:
        amount = Money(amount=data.amount, currency=data.currency).format()
        content = EmailContent(
            kind="refund_succeeded",
            subject=f"Your refund of {amount} is on its way",
            context={
                "amount": amount,
                "refund_id": data.refund_id,
                "payment_id": data.payment_id,
                "process_time": settings.refund_process_time,
            },
        )
        await send_once(conn, mailer, settings, event, data.customer_email, content, data.refund_id)
