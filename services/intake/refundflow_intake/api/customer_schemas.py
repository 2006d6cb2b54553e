"""The request and answer of a customer's erasure (``POST /v1/customers/erase``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from refundflow_intake.json_body import JsonBody as Body


class CustomerErase(Body):
    """The customer to erase, by the address their payments name (matched whatever its letters' case)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "ada@example.com"}]})

    email: str = Field(
        min_length=1,
        max_length=320,
        description="the customer's address as registered (any address billing sent is accepted, to be erased)",
        examples=["ada@example.com"],
    )


class CustomerErasure(BaseModel):
    """What was erased: the address and name on this many payments, and the customer's words and notes to them on
    this many refunds. Ids, amounts, statuses and the ledger are kept."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "era_5f1c2a9b7d3e4f60a1b2c3d4e5f60718",
                    "payments_erased": 2,
                    "refunds_erased": 1,
                    "erased_at": "2026-11-30T10:15:00Z",
                }
            ]
        }
    )

    id: str = Field(description="era_...: the erasure (its Idempotency-Key answers it again)")
    payments_erased: int
    refunds_erased: int
    erased_at: datetime
