"""Which of Stripe's ids name a payment it can refund, and how a refund names it (intake and the processor agree)."""

from __future__ import annotations

PAYMENT_INTENT_PREFIX = "pi_"
# A card charge, and a payment of another method (Stripe's older charge objects): refunded as ``charge=<id>``.
CHARGE_PREFIXES = ("ch_", "py_")


def names_a_charge(provider_payment_id: str) -> bool:
    return provider_payment_id.startswith(CHARGE_PREFIXES)


def refundable_at_stripe(provider_payment_id: str) -> bool:
    """A payment intent's id or a charge's: the only ids a Stripe refund can name."""
    return provider_payment_id.startswith((PAYMENT_INTENT_PREFIX, *CHARGE_PREFIXES))
