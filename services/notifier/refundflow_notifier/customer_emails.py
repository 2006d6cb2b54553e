"""What each event tells the customer, and when it tells them nothing. Pure: no I/O here.

One email per event, each true when it is sent:
- received: only for a request the customer made (the portal, or ``refund.submit`` for them), not for one the
  merchant made nor one the merchant's rules approved as it was made (the approval says it all);
- approved: the amount, what the customer asked for when it is less, and the merchant's note to the customer;
- refunded: with the refund policy's process time, as intake said it at the approval;
- rejected: with the merchant's note, only for a request the customer made (the merchant dropping its own refund
  refuses the customer nothing); a cancel-only decision is told by the cancellation instead;
- failed and reversed: what happens next; cancelled: until when access lasts; extended: by how many days;
- a cancel the provider refused: that it is not cancelled yet, and that the merchant was told (the refusal's own
  words stay with the team), when the event carries the request's words to the customer (the processor's refusal
  of a cancel naming another subscription does not: nobody asked it for that customer).
Every one names the merchant and carries the customer's link to the portal page of the payment, when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from refundflow_notifier.customer_contacts import Contact, CustomerLink
from refundflow_notifier.email_messages import reply_to
from refundflow_notifier.notification_rules import EmailContent, MerchantPreferences
from refundflow_shared.events import (
    DISPUTED_FAILURE_REASONS,
    EventData,
    RefundApproved,
    RefundFailed,
    RefundRejected,
    RefundRequested,
    RefundReversed,
    RefundSucceeded,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
)
from refundflow_shared.money import format_amount

CUSTOMER_CHANNELS = ("portal", "command")
# The events that may bring their customer an email (``customer_email`` says which do, and what it says). A new
# kind of email needs its event here.
EMAILED = (
    RefundRequested,
    RefundApproved,
    RefundSucceeded,
    RefundRejected,
    RefundFailed,
    RefundReversed,
    SubscriptionCanceled,
    SubscriptionCancelFailed,
    SubscriptionExtended,
)
# Each kind of email, and where it comes in its refund's life. A customer's emails about one refund go one at a
# time, in this order (then in the order queued), whatever order their events came in: a consumer batch reads topic
# by topic, so it can queue "on its way" before "approved" (``message_queue``'s claim holds the later ones back).
# A decision's goodwill days come before its cancellation, which tells the access end they made.
STEP_IN_THE_REFUND = {
    "refund_requested": 0,
    "refund_approved": 1,
    "refund_rejected": 1,
    "refund_succeeded": 2,
    "refund_failed": 2,
    "subscription_extended": 2,
    "subscription_canceled": 3,
    "subscription_cancel_failed": 3,
    "refund_reversed": 3,
}


def step_it_follows(data: EventData) -> int | None:
    """The step of the email that always comes before the event's (None: none does): an approval before any outcome
    of a decision that approved money, "on its way" before a reversal, "we received your request" before the
    decision on a request the customer made, and a cancel-only decision's goodwill days before its cancellation.
    Queued while that one is not, it waits for it a while (``EMAIL_ORDER_WAIT_SECONDS``): its event can come in
    first, as the earlier event is on another topic, in a batch still to come."""
    approved = STEP_IN_THE_REFUND["refund_approved"]
    if isinstance(data, RefundSucceeded | RefundFailed):
        return approved
    if isinstance(data, RefundReversed):
        return STEP_IN_THE_REFUND["refund_succeeded"]
    if isinstance(data, RefundApproved | RefundRejected):
        auto_approved = isinstance(data, RefundApproved) and data.auto_approved
        acknowledged = _received_email_sent(data.channel, auto_approved=auto_approved)
        return STEP_IN_THE_REFUND["refund_requested"] if acknowledged else None
    if getattr(data, "refund_id", None) is None:
        return None  # asked by no decision on a refund (the dashboard's cancel): first of its kind
    if isinstance(data, SubscriptionExtended):
        return None if data.last_period else approved  # the last period: a cancel-only decision's, no approval
    if isinstance(data, SubscriptionCanceled | SubscriptionCancelFailed):
        if data.after_extension:
            return STEP_IN_THE_REFUND["subscription_extended"]
        return None if _cancel_only(data) else approved
    return None


def _cancel_only(data: SubscriptionCanceled | SubscriptionCancelFailed) -> bool:
    """A cancel-only decision's cancel: no money moved, so no approval email. One asked before the flag was
    carried: at the period's end because of a request, as such decisions were the only ones asking that (a refund
    and cancel ends the subscription now)."""
    return data.no_refund or (data.at_period_end and bool(data.refund_id))


def _customer_asked(channel: str | None) -> bool:
    """Whether the refund is one the customer asked for, not the merchant's own (the API). An event from before the
    decisions said the channel is taken as the customer's, as it was."""
    return channel is None or channel in CUSTOMER_CHANNELS


def _received_email_sent(channel: str | None, *, auto_approved: bool) -> bool:
    """Whether the request was acknowledged ("received"): one the customer made, and not approved as it was made.
    (An event from before the decisions said the channel says nothing: it waits for none.)"""
    return channel in CUSTOMER_CHANNELS and not auto_approved


# Why a refund that had succeeded did not reach the customer after all, in their words (Stripe's reasons).
# Anything else, or anything about the merchant's own account, reads as the provider's failure.
# Why a refund did not reach the customer, in their words: only what is theirs to know (their card, their bank).
# The merchant's balance and the provider's troubles stay with the team.
_CUSTOMERS_REASONS = {
    "expired_or_canceled_card": "the card it was sent to has expired or been cancelled",
    "lost_or_stolen_card": "the card it was sent to was reported lost or stolen",
    "declined": "your bank declined it",
}
_REVERSAL_REASON_OTHERWISE = "the payment provider could not complete it"


@dataclass(frozen=True)
class CustomerEmail:
    recipient: str
    content: EmailContent
    follows_step: int | None = None  # see ``step_it_follows``


def day(value: datetime) -> str:
    return f"{value.day} {value.strftime('%B %Y')}"


def merchant_name(data: EventData, contact: Contact, prefs: MerchantPreferences) -> str:
    return getattr(data, "merchant_name", None) or contact.merchant_name or prefs.sender_name or "The merchant"


def customer_email(
    data: EventData,
    prefs: MerchantPreferences,
    contact: Contact,
    link: CustomerLink,
) -> CustomerEmail | None:
    """The email the customer gets for this event, if any: from what the event carries, and from what the notifier
    heard earlier of the payment's customer (``contact``) for what it does not."""
    if not isinstance(data, EMAILED) or contact.erased:  # an erased customer is told nothing more
        return None
    recipient = getattr(data, "customer_email", None) or contact.customer_email
    said = _words(data, prefs, contact)
    if not recipient or said is None:  # '' is the address erased (events.ERASED_ADDRESS)
        return None
    kind, subject, context, link_label = said
    merchant = merchant_name(data, contact, prefs)
    common = {
        "subject": subject,
        "merchant": merchant,
        # A reply reaches the merchant only through its Reply-To; without one it would reach the platform's mailbox.
        "ask": "reply to this email" if reply_to(prefs) else f"contact {merchant} directly",
        "portal_url": link.url,
        "link_until": day(link.until) if link.until else None,
        "link_expired": link.expired,
        "link_label": link_label,
        "reference": getattr(data, "refund_id", None),
    }
    return CustomerEmail(recipient, EmailContent(kind, subject, {**common, **context}), step_it_follows(data))


_Words = tuple[str, str, dict[str, Any], str]
_FOLLOW = "Follow your request"
_SEE = "See your purchase and its refunds"


def _words(data: EventData, prefs: MerchantPreferences, contact: Contact) -> _Words | None:
    if isinstance(data, RefundRequested):
        if not _received_email_sent(data.channel, auto_approved=data.auto_approved):
            return None  # nothing the customer asked for: nothing to acknowledge
        amount = format_amount(data.amount, data.currency)
        subject = f"We received your refund request for {amount}"
        return "refund_requested", subject, {"amount": amount, "review_target": prefs.review_target}, _FOLLOW
    if isinstance(data, RefundApproved):
        amount = format_amount(data.amount, data.currency)
        asked = data.requested_amount if _customer_asked(data.channel) else None  # or nothing they asked for
        requested = format_amount(asked, data.currency) if asked else None
        context = {
            "amount": amount,
            "requested": requested,
            "note": data.note_to_customer,
            "subscription_continues": data.subscription_continues,
        }
        return "refund_approved", f"Your refund of {amount} is approved", context, _FOLLOW
    if isinstance(data, RefundSucceeded):
        amount = format_amount(data.amount, data.currency)
        context = {"amount": amount, "process_time": data.process_time or contact.process_time}
        return "refund_succeeded", f"Your refund of {amount} is on its way", context, _SEE
    if isinstance(data, RefundRejected):
        if data.cancel_only and data.cancellation_follows:
            return None  # told by the cancellation, once the provider has made it
        if not _customer_asked(data.channel):
            return None  # the merchant's own refund, dropped: the customer asked for nothing to be refused
        rejected = {"note": data.note, "subscription_continues": data.subscription_continues}
        return "refund_rejected", "About your refund request", rejected, _SEE
    if isinstance(data, RefundFailed):
        amount = format_amount(data.amount, data.currency)
        failed = {
            "amount": amount,
            "why": _CUSTOMERS_REASONS.get(data.failure_reason),
            "disputed": data.failure_reason in DISPUTED_FAILURE_REASONS,
        }
        return "refund_failed", f"A problem with your refund of {amount}", failed, _SEE
    if isinstance(data, RefundReversed):  # we told them it was on its way: say plainly that it is not
        amount = format_amount(data.amount, data.currency)
        why = _CUSTOMERS_REASONS.get(data.failure_reason, _REVERSAL_REASON_OTHERWISE)
        subject = f"Your refund of {amount} could not be completed"
        return "refund_reversed", subject, {"amount": amount, "why": why}, _SEE
    if isinstance(data, SubscriptionCanceled):
        until = day(data.ends_at) if data.at_period_end and data.ends_at else None
        ended_on = day(data.ends_at) if data.already_ended and data.ends_at else None
        cancelled = {
            "access_until": until,
            "at_period_end": data.at_period_end,  # without the date (the provider said none): still not today
            # It includes the decision's goodwill days, free: not all of it is the period the customer paid for.
            "after_extension": data.after_extension,
            "already_ended": data.already_ended,
            "ended_on": ended_on,
            # A cancel-only decision, whose rejection is not mailed. A cancel asked before the flag was carried:
            # at the period's end because of a request, as such decisions were the only ones asking that.
            "no_refund": _cancel_only(data) and _customer_asked(data.channel),  # the API's asked nothing
            "note": data.note_to_customer,
        }
        return "subscription_canceled", "Your subscription is cancelled", cancelled, _SEE
    if isinstance(data, SubscriptionCancelFailed):
        if data.customer_email is None:
            return None  # refused before the provider was asked: the team's alone
        refused = {"no_refund": data.no_refund and _customer_asked(data.channel), "note": data.note_to_customer}
        return "subscription_cancel_failed", "Your subscription is not cancelled yet", refused, _SEE
    if isinstance(data, SubscriptionExtended):
        # The last period (a cancel-only decision's goodwill days): when access ends, not when payment is due.
        by = f"{data.days} day" if data.days == 1 else f"{data.days} days"
        extended = {"by": by, "period_end": day(data.current_period_end), "last_period": data.last_period}
        return "subscription_extended", f"Your subscription is extended by {by}", extended, _SEE
    return None
