"""The refund insights' response body."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from refundflow_intake.api import examples as ex
from refundflow_shared.money import MinorUnitsOut


class ReasonInsight(BaseModel):
    reason: str
    currency: str
    requests: int
    amount: int = Field(description="asked for, in minor units")
    refunded: int
    refunded_amount: MinorUnitsOut


class ProductInsight(BaseModel):
    product_id: str
    product_name: str
    currency: str
    payments: int
    paid_amount: MinorUnitsOut
    refunded_payments: int
    refunded_amount: MinorUnitsOut
    refund_rate: float = Field(description="refunded_amount / paid_amount, of payments made in the period")
    requests: int


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
    by_reason: list[ReasonInsight]
    by_product: list[ProductInsight]
    decisions: DecisionTimes
    pending_over_24h: int = Field(description="requests still pending after 24 h, now")
    pending_over_48h: int
