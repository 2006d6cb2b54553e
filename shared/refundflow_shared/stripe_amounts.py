"""Amounts as Stripe counts them, which is not ISO 4217 for every currency (docs.stripe.com/currencies, special
cases). The one table of it: the processor's Stripe adapter converts with it, intake refuses up front what Stripe
could never refund."""

from __future__ import annotations

# Stripe's amount = ours * times / per: its ISK keeps two decimals (100 is one króna), its MGA has none.
_STRIPE_SCALE = {"ISK": (100, 1), "MGA": (1, 100)}
# Stripe takes amounts of these three-decimal currencies only in whole tens (its card partners' rule).
_IN_WHOLE_TENS = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


class AmountNotRepresentable(ValueError):
    """Stripe cannot take the amount exactly: it would have to be rounded, and a refund never is."""


def stripe_step(currency: str) -> int:
    """The ISO minor units Stripe's smallest step of ``currency`` is: it takes only whole multiples of it."""
    if currency in _IN_WHOLE_TENS:
        return 10
    return _STRIPE_SCALE.get(currency, (1, 1))[1]


def to_stripe_units(amount: int, currency: str) -> int:
    """``amount`` (ISO minor units) as Stripe counts it; ``AmountNotRepresentable`` if it cannot take it exactly."""
    if amount % stripe_step(currency):
        raise AmountNotRepresentable(
            f"Stripe takes {currency} only in steps of {stripe_step(currency)} minor units: {amount} is not one"
        )
    times, per = _STRIPE_SCALE.get(currency, (1, 1))
    return amount * times // per


def from_stripe_units(amount: int, currency: str) -> int:
    """A Stripe amount in ISO minor units. A fraction of a króna (Stripe took them until 2023) is dropped: what
    a refund made elsewhere is known to have returned is never more than it did."""
    times, per = _STRIPE_SCALE.get(currency, (1, 1))
    return amount * per // times
