from __future__ import annotations

import uuid

from refundflow_processor.records import names_our_refund


def test_only_the_shape_of_intakes_refund_ids_is_taken_for_ours() -> None:
    """A refund made outside Refundflow whose metadata happens to start like ours (a merchant's own ``ref_1001``)
    is booked as external, not held for an approval that will never come."""
    assert names_our_refund(f"ref_{uuid.uuid4().hex}")
    assert not names_our_refund("ref_1001")
    assert not names_our_refund("ref_2024")
    assert not names_our_refund(f"ref_{uuid.uuid4().hex}0")
    assert not names_our_refund(f"ref_{uuid.uuid4().hex.upper()}")
