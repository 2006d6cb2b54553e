"""What the portal's status card tells a customer about a refund that failed."""

from __future__ import annotations

import pytest

from refundflow_intake.portal.customer_words import status_of


def failed(reason: str) -> dict[str, object]:
    return {
        "amount": 1500,
        "currency": "JPY",
        "status": "failed",
        "failure_reason": reason,
        "subscription_action": None,
    }


@pytest.mark.parametrize("reason", ["payment_disputed", "charge_for_pending_refund_disputed"])
def test_a_refund_stopped_by_a_dispute_points_to_the_bank_not_to_the_merchant(reason: str) -> None:
    said = status_of(failed(reason), merchant="Acme", process_time="5-10 days").summary

    assert "disputed with your bank" in said and "the dispute decides" in said
    assert "will contact you" not in said, "nobody will: the merchant cannot refund a disputed payment"


def test_any_other_failure_says_the_merchant_follows_up() -> None:
    said = status_of(failed("insufficient_funds"), merchant="Acme", process_time="5-10 days").summary

    assert "Acme has been told and will contact you" in said
    assert "insufficient" not in said
