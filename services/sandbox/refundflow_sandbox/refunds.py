"""The sandbox's refunds: an in-memory ledger and the rules a refund obeys. No HTTP here."""

from __future__ import annotations

import secrets
import string
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from refundflow_sandbox.scenarios import Behaviour, Scenario

REFUND_REASONS: frozenset[str] = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A Stripe-looking object id such as ``re_3kq...``."""
    number, chars = secrets.randbits(143), []  # 62**24 < 2**143: one draw from the system's randomness, not 24
    for _ in range(24):
        number, digit = divmod(number, 62)
        chars.append(_ID_ALPHABET[digit])
    return prefix + "".join(chars)


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundRuleError(Exception):
    """A refund the rules refuse. ``code`` and ``param`` are Stripe's error fields."""

    code: str | None = None
    param: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AmountTooLarge(RefundRuleError):
    code = "amount_too_large"
    param = "amount"


class ChargeAlreadyRefunded(RefundRuleError):
    code = "charge_already_refunded"


class CurrencyMismatch(RefundRuleError):
    param = "currency"


class RefundNotFound(RefundRuleError):
    code = "resource_missing"
    param = "id"


class PaymentIntentMissing(RefundRuleError):
    code = "resource_missing"
    param = "payment_intent"


class RefundNotChangeable(RefundRuleError):
    code = "refund_not_changeable"


@dataclass(frozen=True)
class RefundRequest:
    """What a caller asks for; already validated for shape (see refund_params.py). ``payment``: the payment intent
    (``pi_...``) or the charge (``ch_...``, ``py_...``) it refunds."""

    payment: str
    amount: int | None = None
    currency: str | None = None
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotionalCharge:
    """The charge behind a payment intent (invented on first use), or a charge refunded by its own id."""

    id: str
    payment_intent: str | None
    amount: int
    currency: str


@dataclass
class Refund:
    id: str
    amount: int
    currency: str
    status: RefundStatus
    payment_intent: str | None  # None for a charge made without one (refunded as charge=)
    charge: str
    reason: str | None
    failure_reason: str | None
    metadata: dict[str, str]
    created: int
    # When a pending refund turns succeeded (unix seconds); None once settled or never pending.
    settles_at: float | None = None
    # When a succeeded refund fails after all (unix seconds); None unless its scenario says so.
    fails_at: float | None = None

    @property
    def holds_funds(self) -> bool:
        """Pending and succeeded refunds use up the charge; failed ones give the money back."""
        return self.status is not RefundStatus.FAILED


@dataclass(frozen=True)
class Update:
    refund: Refund
    event_types: tuple[str, ...]


class RefundLedger:
    """All refunds the sandbox has made, per payment intent, with Stripe's amount rules."""

    def __init__(
        self,
        *,
        charge_amount: int,
        default_currency: str,
        pending_seconds: float,
        late_failure_seconds: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._charge_amount = charge_amount
        self._default_currency = default_currency.lower()
        self._pending_seconds = pending_seconds
        self._late_failure_seconds = late_failure_seconds
        self._clock = clock
        self._charges: dict[str, NotionalCharge] = {}
        self._refunds: dict[str, Refund] = {}
        # Indexes, so that no call scans every refund ever made (a bench makes thousands): each intent's refunds,
        # in the order made, and the refunds that settle or fail later, until they do.
        self._by_intent: defaultdict[str, list[Refund]] = defaultdict(list)
        self._due: dict[str, Refund] = {}
        self._attempts: Counter[str] = Counter()
        self._updates: list[Update] = []

    def record_attempt(self, payment: str) -> int:
        """Count one executed create call for the payment; returns its 1-based number."""
        self._attempts[payment] += 1
        return self._attempts[payment]

    def create(self, request: RefundRequest, scenario: Scenario) -> Refund:
        """Refund part or all of what is left of the payment intent's charge.

        Without an amount, the whole remainder is refunded. The status follows the scenario:
        failed (with its failure reason), pending (until ``pending_seconds`` have passed),
        otherwise succeeded.
        """
        if scenario.behaviour is Behaviour.MISSING:
            raise PaymentIntentMissing(f"No such payment_intent: '{request.payment}'")
        charge = self._charge_for(request.payment, request.currency)
        if request.currency is not None and request.currency.lower() != charge.currency:
            raise CurrencyMismatch(
                f"Currency {request.currency.lower()} does not match the charge's currency {charge.currency}."
            )
        remaining = charge.amount - self.refunded_amount(request.payment)
        amount = remaining if request.amount is None else request.amount
        if remaining <= 0:
            raise ChargeAlreadyRefunded(f"Charge {charge.id} has already been refunded.")
        if amount > remaining:
            raise AmountTooLarge(f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining}).")

        now = self._clock()
        refund = Refund(
            id=new_id("re_"),
            amount=amount,
            currency=charge.currency,
            status=RefundStatus.SUCCEEDED,
            payment_intent=charge.payment_intent,
            charge=charge.id,
            reason=request.reason,
            failure_reason=None,
            metadata=dict(request.metadata),
            created=int(now),
        )
        if scenario.behaviour is Behaviour.FAIL:
            refund.status = RefundStatus.FAILED
            refund.failure_reason = scenario.failure_reason
        elif scenario.behaviour is Behaviour.PENDING:
            refund.status = RefundStatus.PENDING
            refund.settles_at = now + self._pending_seconds
        elif scenario.behaviour is Behaviour.LATE_FAILURE:
            refund.fails_at = now + self._late_failure_seconds
        self._refunds[refund.id] = refund
        self._by_intent[request.payment].append(refund)
        if refund.settles_at is not None or refund.fails_at is not None:
            self._due[refund.id] = refund
        return refund

    def refunded_amount(self, payment_intent: str) -> int:
        return sum(r.amount for r in self._by_intent.get(payment_intent, ()) if r.holds_funds)

    def get(self, refund_id: str) -> Refund:
        self.settle_due_refunds()
        try:
            return self._refunds[refund_id]
        except KeyError:
            raise RefundNotFound(f"No such refund: '{refund_id}'") from None

    def list_refunds(self, *, payment_intent: str | None = None, charge: str | None = None) -> list[Refund]:
        """Matching refunds, newest first (as Stripe lists them)."""
        self.settle_due_refunds()
        made: Iterable[Refund] = (
            self._refunds.values() if payment_intent is None else self._by_intent.get(payment_intent, [])
        )
        found = [r for r in made if charge is None or r.charge == charge]
        found.reverse()
        return found

    def settle_due_refunds(self) -> list[Refund]:
        """Turn pending refunds whose time has come into succeeded ones, and late failures into failed ones;
        returns those changed. Reads call this so a GET shows the transition."""
        now = self._clock()
        changed: list[Refund] = []
        for refund in list(self._due.values()):
            if refund.settles_at is not None and refund.settles_at <= now:
                changed.append(self.settle(refund.id))
            elif refund.fails_at is not None and refund.fails_at <= now:
                changed.append(self.fail(refund.id, "expired_or_canceled_card"))
        return changed

    def settle(self, refund_id: str) -> Refund:
        """A pending refund succeeds now (Stripe sends ``refund.updated``)."""
        refund = self._refunds.get(refund_id)
        if refund is None or refund.status is not RefundStatus.PENDING:
            raise RefundNotChangeable(f"Refund {refund_id} is not pending.")
        refund.status, refund.settles_at = RefundStatus.SUCCEEDED, None
        self._due.pop(refund_id, None)
        self._updates.append(Update(refund, ("refund.updated",)))
        return refund

    def fail(self, refund_id: str, failure_reason: str) -> Refund:
        """A pending or succeeded refund fails now, its money back on the charge (Stripe sends ``refund.failed``
        and ``charge.refund.updated``)."""
        refund = self._refunds.get(refund_id)
        if refund is None or refund.status is RefundStatus.FAILED:
            raise RefundNotChangeable(f"Refund {refund_id} cannot fail: it is not pending or succeeded.")
        refund.status, refund.failure_reason = RefundStatus.FAILED, failure_reason
        refund.settles_at = refund.fails_at = None
        self._due.pop(refund_id, None)
        self._updates.append(Update(refund, ("refund.failed", "charge.refund.updated")))
        return refund

    def take_updates(self) -> list[Update]:
        """Refunds whose status changed since the last call, whoever noticed first (a read or the webhook
        task): each change is handed out once, with the webhook event types Stripe sends for it."""
        self.settle_due_refunds()
        updates, self._updates = self._updates, []
        return updates

    def _charge_for(self, payment: str, currency: str | None) -> NotionalCharge:
        charge = self._charges.get(payment)
        if charge is None:
            of_intent = payment.startswith("pi_")
            charge = NotionalCharge(
                id=new_id("ch_") if of_intent else payment,
                payment_intent=payment if of_intent else None,
                amount=self._charge_amount,
                currency=(currency or self._default_currency).lower(),
            )
            self._charges[payment] = charge
        return charge
