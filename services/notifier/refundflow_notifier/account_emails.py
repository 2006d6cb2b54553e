"""Emails to the people of a merchant's team: an invite to the dashboard, a password reset. The one-time link
arrives sealed (``SecretBox``, bound to the user id); it is opened only here, to be put in the email, and
never logged.
"""

from __future__ import annotations

import asyncpg
import structlog

from refundflow_notifier import message_queue
from refundflow_notifier.notification_rules import EmailContent, MerchantPreferences
from refundflow_notifier.settings import NotifierSettings
from refundflow_shared.events import Event, PasswordResetRequested, TeamMemberInvited
from refundflow_shared.secret_box import SecretBox

log = structlog.get_logger(__name__)

_ROLE_WORDS = {"owner": "an owner", "approver": "an approver", "viewer": "a viewer"}


class LinkCannotBeOpened(ValueError):
    """The sealed link does not open with our key: the event can never be handled (dead-lettered)."""


def account_email(data: TeamMemberInvited | PasswordResetRequested, url: str) -> EmailContent:
    """What the person reads. Pure: no I/O."""
    expires = data.expires_at.strftime("%d %b %Y, %H:%M UTC")
    if isinstance(data, TeamMemberInvited):
        return EmailContent(
            audience="account",
            kind="team_invite",
            subject=f"You are invited to {data.merchant_name}'s refund dashboard",
            context={
                "merchant_name": data.merchant_name,
                "role": _ROLE_WORDS.get(data.role, data.role),
                "invited_by": data.invited_by,
                "url": url,
                "expires": expires,
            },
        )
    return EmailContent(
        "password_reset", "Reset your Refundflow password", {"url": url, "expires": expires}, audience="account"
    )


async def queue_account_email(
    conn: asyncpg.Connection,
    settings: NotifierSettings,
    box: SecretBox | None,
    event: Event,
    data: TeamMemberInvited | PasswordResetRequested,
) -> None:
    if box is None:
        raise LinkCannotBeOpened("WEBHOOK_SECRET_KEY is not set: account links cannot be opened")
    try:
        url = box.open(data.sealed_url, context=data.user_id)
    except ValueError as exc:
        raise LinkCannotBeOpened(f"the link of user {data.user_id} does not open: {exc}") from None
    # From Refundflow itself, not under the merchant's name: it is about the person's own account.
    platform = MerchantPreferences(review_target=settings.review_target)
    email = message_queue.email(
        settings,
        platform,
        event_id=event.id,
        merchant_id=data.merchant_id,
        recipient=data.email,
        content=account_email(data, url),
    )
    await message_queue.queue(conn, email)
    log.info("account_email_queued", kind=event.type.value, user_id=data.user_id)
