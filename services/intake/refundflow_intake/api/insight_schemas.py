"""The refund insights' response body."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from refundflow_intake.api import examples as ex
from refundflow_shared.money import MinorUnitsOut


class ReasonInsight(BaseModel):
    reason: str
    currency: str
    requests: int = Field(description="requests asked for in the period")
    amount: int = Field(description="asked for in the period, in minor units")
    refunded: int = Field(
        description="refunds of this reason that reached the customer in the period, less those reversed in it"
    )
    refunded_amount: MinorUnitsOut = Field(
        description="money refunds of this reason returned to customers in the period, less reversals in it, as the"
        " balance counts it, in minor units (refunds made at the provider have no reason: see refunded)"
    )


class ProductInsight(BaseModel):
    product_id: str
    product_name: str
    currency: str
    payments: int
    paid_amount: MinorUnitsOut
    refunded_payments: int = Field(description="payments of the product with money refunded in the period")
    refunded_amount: MinorUnitsOut = Field(
        description="money returned in the period for the product's payments (any paid before too), ours and refunds"
        " made at the provider, less reversals, as the balance counts it, in minor units"
    )
    refund_rate: float = Field(description="refunded_amount / paid_amount: refunded in the period over sold in it")
    requests: int


class RefundedInPeriod(BaseModel):
    currency: str
    amount: MinorUnitsOut = Field(
        description="money returned to customers in the period: refunds that succeeded, ours and those made at the"
        " provider, less reversals, by when they settled, in minor units: what the balance's refunded grew by in it"
    )


class DecisionTimes(BaseModel):
    count: int
    median_seconds_to_decision: int | None
    p90_seconds_to_decision: int | None


class RefundInsights(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, json_schema_extra=ex.examples(ex.INSIGHTS)
    )

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    refunded: list[RefundedInPeriod]
    by_reason: list[ReasonInsight]
    by_product: list[ProductInsight]
    decisions: DecisionTimes
    pending_over_24h: int = Field(description="requests still pending after 24 h, now")
    pending_over_48h: int
