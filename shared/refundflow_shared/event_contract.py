"""Which service consumes and publishes which event, written once: the runtime enforces it and the AsyncAPI
document is generated from it.

A consumer refuses to start when its registered handlers are not exactly its service's ``consumes``, and the
outbox refuses to stage an event its source does not declare in ``publishes``: the contract cannot drift from the
code without the code failing. Every consumer also publishes ``<topic>.dlq`` for each topic it consumes, and every
service publishes ``team_alert.raised`` (the backbone's alerts about parked and dead-lettered events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from refundflow_shared.events import EventType

E = EventType
_BACKBONE_ALERTS = "an event parked in the outbox, or a refund's event dead-lettered here: the team must look"
_INTAKE_ALERTS = f"{_BACKBONE_ALERTS}; a refund the provider made that intake holds no record of, booked"


class ContractBroken(RuntimeError):
    """A programming error: the code consumes or publishes what its service's contract does not say."""


@dataclass(frozen=True)
class ServiceContract:
    """What one service reads and writes, each event type with why (shown in the AsyncAPI document)."""

    service: str
    consumes: Mapping[EventType, str]
    publishes: Mapping[EventType, str]
    title: str = ""

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of every event the service publishes."""
        return f"refundflow/{self.service}"

    def check_consumes(self, registered: set[EventType]) -> None:
        """Raise unless ``registered`` (the handlers) is exactly what the contract says the service consumes."""
        if registered != set(self.consumes):
            undeclared = sorted(t.value for t in registered - set(self.consumes))
            unhandled = sorted(t.value for t in set(self.consumes) - registered)
            raise ContractBroken(
                f"{self.service} handles {undeclared or 'nothing'} its contract does not list, "
                f"and has no handler for {unhandled or 'nothing'} it lists"
            )

    def check_publishes(self, event_type: EventType) -> None:
        if event_type not in self.publishes:
            raise ContractBroken(f"{self.service} may not publish {event_type.value}: its contract does not list it")


INTAKE = ServiceContract(
    "intake",
    title="Payments, refund requests and the merchant's decisions; the ledger",
    consumes=MappingProxyType(
        {
            E.PAYMENT_SUCCEEDED: "a captured payment from platform billing (and intake's own); registered once",
            E.PAYMENT_DISPUTED: "a dispute: refunds on the payment are blocked from then on",
            E.REFUND_SUCCEEDED: "the provider refunded: the refund succeeds, the payment and the balance follow",
            E.REFUND_FAILED: "the provider refused: the refund fails, its amount is refundable again",
            E.REFUND_REVERSED: "a succeeded refund failed afterwards: payment and balance are restored",
            E.REFUND_EXTERNAL_DETECTED: "a refund made outside Refundflow, reported again as it moves",
            E.REFUND_SUBMIT: "a refund request command from another platform service; refused ones are answered",
            E.SUBSCRIPTION_CANCELED: "the provider cancelled a subscription: noted on the request that asked",
            E.SUBSCRIPTION_EXTENDED: "the provider moved a subscription's period end: noted on the request",
            E.SUBSCRIPTION_CANCEL_FAILED: "the provider refused a cancel: it may be asked again; noted on the request",
            E.SUBSCRIPTION_EXTENSION_FAILED: "the provider refused an extension: noted on the request and the payment",
            E.WEBHOOK_ENDPOINT_DISABLED: "the notifier disabled an endpoint: the merchant sees it disabled, and why",
        }
    ),
    publishes=MappingProxyType(
        {
            E.PAYMENT_SUCCEEDED: "a payment the platform registered with POST /v1/payments",
            E.REFUND_REQUESTED: "a new refund request, pending the merchant's decision",
            E.REFUND_APPROVED: "approved (by the merchant, two approvers, or the policy): the processor refunds it",
            E.REFUND_REJECTED: "rejected, with the merchant's note to the customer (or closed as cancel-only)",
            E.SUBSCRIPTION_CANCEL_REQUESTED: "cancel the subscription now, or at the end of its period",
            E.SUBSCRIPTION_EXTENSION_GRANTED: "the processor extends the current period by some days (goodwill)",
            E.REFUND_SUBMIT_REJECTED: "why a refund.submit command was refused",
            E.REFUND_REVIEW_OVERDUE: "a request pending longer than the merchant's review target (once)",
            E.WEBHOOK_ENDPOINT_CONFIGURED: "a merchant's webhook endpoint as it now is (its signing secret sealed)",
            E.NOTIFICATION_SETTINGS_CONFIGURED: "a merchant's team channels and email presentation (sealed Slack URL)",
            E.TEAM_MEMBER_INVITED: "someone was invited to the merchant's dashboard (the one-time link sealed)",
            E.PASSWORD_RESET_REQUESTED: "a person asked to reset their dashboard password (the link sealed)",
            E.CUSTOMER_ERASED: "the merchant erased a customer's personal data: one per payment, no address in it",
            E.TEAM_ALERT_RAISED: _INTAKE_ALERTS,
        }
    ),
)

PROCESSOR = ServiceContract(
    "processor",
    title="Executes approved refunds, cancels and extensions at the payment provider, exactly once",
    consumes=MappingProxyType(
        {
            E.PAYMENT_SUCCEEDED: "the payment's provider id and amount, kept to refund it later",
            E.PAYMENT_DISPUTED: "a chargeback: an approved refund the provider does not hold yet is not made",
            E.REFUND_APPROVED: "a refund to make at the provider",
            E.SUBSCRIPTION_CANCEL_REQUESTED: "a subscription to cancel at the provider",
            E.SUBSCRIPTION_EXTENSION_GRANTED: "a subscription period to extend at the provider",
            E.CUSTOMER_ERASED: "the payment's customer was erased: their address and notes to them are overwritten",
        }
    ),
    publishes=MappingProxyType(
        {
            E.REFUND_SUCCEEDED: "the provider made the refund",
            E.REFUND_FAILED: "the provider refused the refund, or it could not be made within the retry budget",
            E.REFUND_REVERSED: "a refund the provider had reported succeeded failed afterwards",
            E.PAYMENT_REFUNDED: "money reached the customer; the payment's totals after this refund",
            E.SUBSCRIPTION_CANCELED: "the provider canceled the subscription (now or at the period's end)",
            E.SUBSCRIPTION_CANCEL_FAILED: "the provider refused to cancel the subscription (the team is alerted too)",
            E.SUBSCRIPTION_EXTENDED: "the provider moved the subscription's period end",
            E.SUBSCRIPTION_EXTENSION_FAILED: "the provider refused a goodwill extension (the team is alerted too)",
            E.REFUND_EXTERNAL_DETECTED: "a refund made outside Refundflow, found by the sync job",
            E.PROVIDER_UNAVAILABLE: "the provider could not be reached within the retry budget",
            E.TEAM_ALERT_RAISED: "a provider refusal or mismatch, refused credentials, a parked or dead-lettered event",
        }
    ),
)

NOTIFIER = ServiceContract(
    "notifier",
    title="Customer emails, team alerts and signed merchant webhooks",
    consumes=MappingProxyType(
        {
            E.REFUND_REQUESTED: "the customer's confirmation email; webhook",
            E.REFUND_APPROVED: "the customer's email; webhook",
            E.REFUND_REJECTED: "the customer's email; webhook",
            E.REFUND_SUCCEEDED: "the customer's email; webhook",
            E.REFUND_FAILED: "the team's alert; webhook",
            E.REFUND_REVERSED: "the customer's email and the team's alert; webhook",
            E.PAYMENT_REFUNDED: "webhook",
            E.SUBSCRIPTION_CANCELED: "the customer's email; webhook",
            E.SUBSCRIPTION_CANCEL_FAILED: "the customer's email, when the provider refused it; webhook (the processor"
            " alerts the team)",
            E.SUBSCRIPTION_EXTENDED: "the customer's email; webhook",
            E.SUBSCRIPTION_EXTENSION_FAILED: "webhook (the processor alerts the team)",
            E.REFUND_REVIEW_OVERDUE: "the team's alert",
            E.PROVIDER_UNAVAILABLE: "the team's alert",
            E.TEAM_ALERT_RAISED: "sent to the merchant's team channels (email, Slack)",
            E.WEBHOOK_ENDPOINT_CONFIGURED: "where the merchant's webhooks go, and their signing secret",
            E.NOTIFICATION_SETTINGS_CONFIGURED: "where the merchant's team alerts go, how emails present the merchant",
            E.TEAM_MEMBER_INVITED: "the invite email",
            E.PASSWORD_RESET_REQUESTED: "the password reset email",
            E.SUBSCRIPTION_CANCEL_REQUESTED: "the customer's contact and portal link, kept for the outcome's email",
            E.SUBSCRIPTION_EXTENSION_GRANTED: "the customer's contact and portal link, kept for the outcome's email",
            E.CUSTOMER_ERASED: "the payment's customer was erased: their contact, unsent emails and webhook copies go",
        }
    ),
    publishes=MappingProxyType(
        {
            E.WEBHOOK_ENDPOINT_DISABLED: "an endpoint that answered 410, or failed N events in a row, is disabled",
            E.TEAM_ALERT_RAISED: _BACKBONE_ALERTS,
        }
    ),
)

CONTRACTS: Mapping[str, ServiceContract] = MappingProxyType({c.service: c for c in (INTAKE, PROCESSOR, NOTIFIER)})
# Sources outside the catalogue (a test's probe service) are declared with ``declare``.
_by_source: dict[str, ServiceContract] = {c.source: c for c in CONTRACTS.values()}
_by_service: dict[str, ServiceContract] = dict(CONTRACTS)


def declare(contract: ServiceContract) -> ServiceContract:
    """Add a service outside Refundflow's three (e.g. a test's probe built on the backbone)."""
    if contract.service in CONTRACTS:
        raise ContractBroken(f"{contract.service}'s contract is in the catalogue; it cannot be declared again")
    _by_source[contract.source] = contract
    _by_service[contract.service] = contract
    return contract


def contract_of(service: str) -> ServiceContract:
    try:
        return _by_service[service]
    except KeyError:
        raise ContractBroken(f"no event contract for a service named {service!r}") from None


def check_publishes(source: str, event_type: EventType) -> None:
    """Raise unless the service that is ``source`` declares ``event_type`` in its ``publishes``."""
    contract = _by_source.get(source)
    if contract is None:
        raise ContractBroken(f"no event contract for the source {source!r}")
    contract.check_publishes(event_type)
