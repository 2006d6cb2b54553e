from __future__ import annotations

import pytest

from refundflow_processor.payment_provider import FAILURE_REASONS, ProviderRefund, normalise_failure_reason
from refundflow_processor.records import idempotency_key


@pytest.mark.parametrize("reason", sorted(FAILURE_REASONS))
def test_stripes_failure_reasons_pass_through(reason: str) -> None:
    assert normalise_failure_reason(reason) == reason


@pytest.mark.parametrize("reason", [None, "", "card_melted", "DECLINED"])
def test_anything_else_is_reported_as_unknown(reason: str | None) -> None:
    assert normalise_failure_reason(reason) == "unknown"


def test_the_idempotency_key_names_the_refund_and_the_attempt() -> None:
    assert idempotency_key("ref_abc", 2) == "refund_ref_abc_2"


def test_a_provider_refund_knows_which_of_our_refunds_it_is() -> None:
    assert ProviderRefund(id="re_1", status="succeeded", amount=5, metadata={"refund_id": "ref_1"}).refund_id == "ref_1"
    assert ProviderRefund(id="re_2", status="succeeded", amount=5).refund_id is None
