"""Request and response bodies of the webhook and notification-settings API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field

from refundflow_shared.events import WebhookEventType


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Body):
    url: AnyHttpUrl
    events: list[WebhookEventType] = Field(min_length=1)


class EndpointUpdate(_Body):
    url: AnyHttpUrl | None = None
    events: list[WebhookEventType] | None = Field(default=None, min_length=1)
    enabled: bool | None = Field(default=None, description="true also re-enables an endpoint Refundflow disabled")


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="whsec_...: verifies the webhook-signature header; shown once")


class EndpointList(BaseModel):
    data: list[EndpointOut]


class ReplaySince(_Body):
    since: datetime = Field(description="every subscribed event at or after this time is delivered again")


class ReplayScheduled(BaseModel):
    scheduled: int


class DeliveryAttempt(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="null when no answer came (timeout, refused connection)")
    latency_ms: int
    error: str | None


class Delivery(BaseModel):
    id: int
    event_id: str
    event_type: str
    replay: bool
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[DeliveryAttempt]


class DeliveryState(BaseModel):
    enabled: bool = Field(description="false once Refundflow disabled the endpoint (410, or N failed events)")
    disabled_reason: str | None
    consecutive_failures: int


class DeliveryLog(BaseModel):
    endpoint: DeliveryState | None = Field(description="null until the notifier has seen the endpoint")
    deliveries: list[Delivery]


class NotificationSettings(_Body):
    team_email: EmailStr | None = None
    slack_webhook_url: AnyHttpUrl | None = Field(default=None, description="a Slack-compatible incoming webhook")
    sender_name: str | None = Field(default=None, max_length=100, description="the From name of customer emails")
    reply_to: EmailStr | None = Field(default=None, description="where customers' replies go")
    review_target: str | None = Field(default=None, max_length=100, examples=["within 2 business days"])
    refund_process_time: str | None = Field(default=None, max_length=100, examples=["5–10 business days"])
