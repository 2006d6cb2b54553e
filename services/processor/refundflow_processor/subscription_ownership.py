"""Whose subscription a cancel or an extension may change: the one its payment is of, for its payment's merchant, as
billing's payment.succeeded said. Checked before any call, as a refund's provider payment is (defence in depth)."""

from __future__ import annotations

from typing import TypedDict

from refundflow_processor.records import PaidSubscription


class AlertWords(TypedDict):
    kind: str
    title: str


# The team alert of a cancel or an extension refused before any call.
REFUSAL_ALERT: AlertWords = {
    "kind": "subscription_request_mismatch",
    "title": "A subscription change was refused: it does not name its payment's subscription",
}
PAYMENT_NEVER_CAME = "the payment it names was never announced (no payment.succeeded)"


def subscription_refusal(
    paid: PaidSubscription, *, merchant_id: str, payment_id: str, subscription_id: str
) -> str | None:
    """Why a change of ``subscription_id`` asked through ``payment_id`` for ``merchant_id`` must not be made (None:
    make it). Names no other merchant's subscription: the reason goes back to the merchant who asked."""
    if paid.merchant_id != merchant_id or (paid.said and paid.subscription_id != subscription_id):
        return f"subscription {subscription_id} is not the subscription of payment {payment_id} of this merchant"
    return None
