"""Request and response bodies of the webhook and notification-settings API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from refundflow_intake.api.fields import DisplayName, Email, Flag, OutboundUrl, ShortLine, Timestamp
from refundflow_intake.json_body import JsonBody as Body
from refundflow_shared.events import WebhookEventType

MAX_EVENT_TYPES = 32  # the event types, with room for repeats (they are merged)


class EndpointCreate(Body):
    url: OutboundUrl = Field(description="public http(s) only: no loopback, private or link-local addresses")
    events: list[WebhookEventType] = Field(min_length=1, max_length=MAX_EVENT_TYPES)


class EndpointUpdate(Body):
    url: OutboundUrl | None = None
    events: list[WebhookEventType] | None = Field(default=None, min_length=1, max_length=MAX_EVENT_TYPES)
    enabled: Flag | None = Field(default=None, description="true also re-enables an endpoint Refundflow disabled")


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="why Refundflow disabled it (it answered 410, or 5 events in a row failed:"
        " WEBHOOK_DISABLE_AFTER_FAILED_EVENTS); null when enabled, or disabled by the merchant. Enabling it again"
        " (PATCH enabled: true) clears it"
    )
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        None,
        description="after a roll, until when webhooks carry a second signature, made with the previous secret;"
        " null otherwise",
    )


class EndpointCreated(EndpointOut):
    secret: str | None = Field(
        description="whsec_...: verifies the webhook-signature header; shown on creation, and again on a retry with"
        " its Idempotency-Key (Idempotent-Replayed: true) while it is the endpoint's secret: null there once rolled"
    )


class EndpointSecretRolled(EndpointOut):
    """The endpoint with its new signing secret (shown once); the previous one still signs until
    ``previous_secret_expires_at``."""

    secret: str = Field(description="whsec_...: verifies the webhook-signature header; shown once")


class EndpointList(BaseModel):
    data: list[EndpointOut]


class ReplaySince(Body):
    since: Timestamp = Field(
        description="every subscribed event at or after this time is delivered again (30 days back at most)"
    )


class ReplayScheduled(BaseModel):
    scheduled: int = Field(description="deliveries queued: 1, or 0 when the endpoint is disabled")


class ReplayStarted(BaseModel):
    replay: Literal["started", "already_running", "nothing_to_replay"] = Field(
        description="`started`: the notifier replays the period in the background, live events first, and each"
        " delivery shows in the delivery log as it is queued; `already_running`: the same replay is under way, and"
        " this one adds nothing; `nothing_to_replay`: no subscribed event in the period, or the endpoint is disabled"
    )
    scheduled: int = Field(
        description="the deliveries queued by the time of this answer: 0 while the period is walked in the"
        " background (the delivery log shows them as they are queued), so it does not say how many will be sent."
        " Kept for readers of this endpoint's earlier answer, which had only this field; read `replay`"
    )


class DeliveryAttempt(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="null when no answer came (timeout, refused connection)")
    latency_ms: int
    error: str | None = Field(
        description="why the attempt failed, coarsely; on a 2xx, response_truncated when its answer was over the cap"
        " (64 KiB) or still coming at the deadline (delivered all the same)"
    )


class Delivery(BaseModel):
    id: int
    event_id: str
    event_type: str
    replay: bool
    status: Literal["pending", "succeeded", "failed", "cancelled"]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[DeliveryAttempt]


class DeliveryState(BaseModel):
    enabled: bool = Field(
        description="false once Refundflow disabled the endpoint (410, or 5 failed events in a row:"
        " WEBHOOK_DISABLE_AFTER_FAILED_EVENTS)"
    )
    disabled_reason: str | None
    consecutive_failures: int


class DeliveryLog(BaseModel):
    endpoint: DeliveryState | None = Field(description="null until the notifier has seen the endpoint")
    deliveries: list[Delivery]


class NotificationSettings(Body):
    team_email: Email | None = None
    slack_webhook_url: OutboundUrl | None = Field(
        default=None,
        description="a Slack-compatible incoming webhook; stored sealed and never shown again. Left out, the saved"
        " one stays; null clears it",
    )
    sender_name: DisplayName | None = Field(default=None, description="the From name of customer emails")
    reply_to: Email | None = Field(default=None, description="where customers' replies go")
    review_target: ShortLine | None = Field(
        default=None, examples=["within 2 business days"], description="how soon requests are decided, in words"
    )

    @model_validator(mode="before")
    @classmethod
    def _process_time_is_the_policys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "refund_process_time" in data:
            raise ValueError(
                "refund_process_time is no longer a notification setting: customers are told the refund policy's"
                " process_time (PUT /v1/refund-policy), everywhere"
            )
        return data


class NotificationSettingsOut(BaseModel):
    team_email: str | None
    slack_webhook_url: str | None = Field(
        description="masked: whether one is set, and its host; 'unreadable: save it again' when the key that sealed"
        " it was removed or replaced"
    )
    sender_name: str | None
    reply_to: str | None
    review_target: str | None
