"""Which of Stripe's ids name a payment it can refund, and how a refund names it (intake and the processor agree)."""

from __future__ import annotations

PAYMENT_INTENT_PREFIX = "pi_"
# A card charge, and a payment of another method (Stripe's older charge objects): refunded as ``charge=<id>``.
CHARGE_PREFIXES = ("ch_", "py_")


class UnsupportedProviderPayment(ValueError):
    """A provider payment id no Stripe refund can name: every refund of it would fail at Stripe after its approval.
    Intake's API answers it 422 ``provider_payment_id_unsupported``; billing's payment.succeeded saying it is
    dead-lettered by intake and the processor alike."""


def names_a_charge(provider_payment_id: str) -> bool:
    return provider_payment_id.startswith(CHARGE_PREFIXES)


def refundable_at_stripe(provider_payment_id: str) -> bool:
    """A payment intent's id or a charge's: the only ids a Stripe refund can name."""
    return provider_payment_id.startswith((PAYMENT_INTENT_PREFIX, *CHARGE_PREFIXES))


def check_refundable_at_stripe(provider_payment_id: str) -> None:
    """Raise ``UnsupportedProviderPayment`` unless a Stripe refund can name ``provider_payment_id``."""
    if not refundable_at_stripe(provider_payment_id):
        raise UnsupportedProviderPayment(
            f"provider_payment_id {provider_payment_id!r} is neither a payment intent (pi_...) nor a charge"
            " (ch_..., py_...)"
        )
