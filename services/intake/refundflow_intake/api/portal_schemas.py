"""The customer portal's request and response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from refundflow_intake.api import examples as ex
from refundflow_intake.api.fields import Count, CustomerText, Flag
from refundflow_intake.api.schemas import Body, details_required_for_other
from refundflow_intake.domain import RefundReason
from refundflow_shared.money import MinorUnits, MinorUnitsOut


class PortalTokenCreate(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"expires_in_hours": 72}]})

    expires_in_hours: Count | None = Field(default=None, ge=1, le=24 * 90, description="default 168 (7 days)")


class PortalToken(BaseModel):
    model_config = ConfigDict(json_schema_extra=ex.examples(ex.PORTAL_TOKEN))

    token: str = Field(description="the portal's JSON API credential: it opens this payment only")
    url: str = Field(description="the customer's link: their page in the portal, for this payment only")
    payment_id: str
    expires_at: datetime


class PortalRefundRequestCreate(Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"reason": "technical_issue", "message": "The export crashes", "amount": 1500}],
            **details_required_for_other("message"),
        },
    )

    reason: RefundReason
    message: CustomerText | None = Field(default=None, description="in the customer's words")
    amount: MinorUnits | None = Field(
        default=None, gt=0, description="in minor units; defaults to all that is refundable"
    )
    cancel_subscription: Flag | None = Field(
        default=None, description="subscriptions: whether the customer wants it cancelled too (the merchant decides)"
    )


class PortalRefundRequest(BaseModel):
    """What the customer sees of their request."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.PORTAL_REQUEST))

    id: str
    status: str
    amount: MinorUnitsOut
    currency: str
    reason: str
    message: str | None
    note: str | None = Field(description="what the merchant's decision told the customer")
    process_time: str = Field(description="how long an approved refund takes to arrive")
    created_at: datetime
    updated_at: datetime
