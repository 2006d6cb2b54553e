"""The HTTP API's request and response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field
from refundflow_shared.events import Product
from refundflow_shared.money import Currency, MinorUnits


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MerchantCreate(_Body):
    name: str = Field(min_length=1, max_length=200)


class MerchantCreated(BaseModel):
    id: str
    api_key: str = Field(description="shown once; store it, Refundflow keeps only a hash")


class PaymentCreate(_Body):
    customer_email: EmailStr
    amount: MinorUnits = Field(gt=0)
    currency: Currency
    provider_payment_id: str = Field(min_length=1, max_length=255)
    paid_at: datetime
    product: Product


class RefundCreate(_Body):
    payment_id: str
    reason: str = Field(min_length=1, max_length=500)
    amount: MinorUnits | None = Field(default=None, gt=0, description="defaults to all that is refundable")
    currency: Currency | None = None


class Decision(_Body):
    note: str | None = Field(default=None, max_length=2000)


class TimelineEntry(BaseModel):
    status: str
    actor: str
    note: str | None
    at: datetime


class RefundSummary(BaseModel):
    id: str
    payment_id: str
    amount: int
    currency: str
    reason: str
    status: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class RefundOut(RefundSummary):
    timeline: list[TimelineEntry] = []


class PaymentOut(BaseModel):
    id: str
    status: str
    customer_email: str
    amount: int
    currency: str
    refunded_amount: int
    refundable_amount: int
    provider_payment_id: str
    paid_at: datetime
    product: Product
    created_at: datetime
    refunds: list[RefundSummary] = []
