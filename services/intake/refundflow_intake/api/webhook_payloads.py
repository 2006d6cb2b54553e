"""What a merchant's webhook endpoint receives, in intake's OpenAPI document (its ``webhooks``): one entry per event
type merchants may subscribe to, generated from the event contract, so the two cannot drift.

The body is the event as a CloudEvents 1.0 JSON document (structured mode): the envelope and the event's data.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from refundflow_shared.event_contract import CONTRACTS
from refundflow_shared.events import EVENT_DATA_TYPES, NOT_IN_WEBHOOKS, WEBHOOK_EVENT_TYPES, EventData, EventType

DELIVERY = (
    "Sent as a POST, signed per Standard Webhooks: the `webhook-id` header is the event's `id` (drop a duplicate),"
    " `webhook-timestamp` the time of signing in Unix seconds, and `webhook-signature` the HMAC-SHA256 of"
    " `<webhook-id>.<webhook-timestamp>.<body>` under the endpoint's `whsec_` secret. Any 2xx answer acknowledges it"
    " (its body is not read past 64 KiB). Deliveries may arrive out of order: `sequence` orders one payment's events"
    " from one `source`; across sources, order by the refund's status (requested, approved or rejected, succeeded or"
    " failed, reversed), then `time`. Another answer, or none within 15 s, is tried again: at once, then after 5 s,"
    " 5 min, 30 min, 2 h, 5 h, 10 h and 10 h; an event whose last try failed has failed. An endpoint that answers"
    " 410, or fails 5 events in a row (the notifier's `WEBHOOK_DISABLE_AFTER_FAILED_EVENTS`), is disabled"
    " (`enabled: false`, with its `disabled_reason`) until it is enabled again."
)


class _Envelope(BaseModel):
    """The CloudEvents attributes around every webhook's data."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(description="the event's id, also the webhook-id header: the same on every retry and replay")
    source: str = Field(description="the service that published it: refundflow/intake or refundflow/processor")
    time: datetime = Field(description="when the event happened (RFC 3339)")
    subject: str = Field(description="what the event is about: the refund id, or the payment id")
    specversion: Literal["1.0"]
    dataschema: str = Field(description="the data's schema and version, e.g. urn:refundflow:refund.succeeded:v1")
    sequence: int = Field(
        ge=1, description="counts one payment's events from one source (with gaps: not every event is a webhook)"
    )


def _envelope(event_type: str, data: type[EventData]) -> type[BaseModel]:
    model: type[BaseModel] = create_model(
        f"{data.__name__}Webhook",
        __base__=_Envelope,
        __doc__=f"The {event_type} webhook's body.",
        type=(Literal[event_type], ...),  # type: ignore[arg-type]  # each envelope names its one type
        data=(_webhook_data(data), ...),
    )
    return model


def _webhook_data(data: type[EventData]) -> type[BaseModel]:
    """The event's data as a webhook carries it (``Event.webhook_json``): its fields but those ``NOT_IN_WEBHOOKS``."""
    if not NOT_IN_WEBHOOKS & set(data.model_fields):
        return data
    kept: dict[str, Any] = {
        name: (field.annotation, field) for name, field in data.model_fields.items() if name not in NOT_IN_WEBHOOKS
    }
    model: type[BaseModel] = create_model(data.__name__, __config__=data.model_config, __doc__=data.__doc__, **kept)
    return model


def _receiver(body: type[BaseModel]) -> Any:
    """A route FastAPI documents with ``body`` as its request body; it describes the merchant's endpoint, and is
    never served."""

    async def merchant_endpoint(event: Any) -> None:
        raise NotImplementedError("a webhook is served by the merchant")

    parameter = inspect.Parameter("event", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=body)
    merchant_endpoint.__signature__ = inspect.Signature([parameter], return_annotation=None)  # type: ignore[attr-defined]
    return merchant_endpoint


def _what_it_tells(event_type: str) -> str:
    """Why its source publishes it, as the event contract says (the refund's decisions are intake's, what the provider
    did the processor's)."""
    said = [c.publishes[EventType(event_type)] for c in CONTRACTS.values() if EventType(event_type) in c.publishes]
    text = "; ".join(said)
    return text[:1].upper() + text[1:]


def document_webhooks(app: FastAPI) -> None:
    """Add every webhook event type to ``app``'s OpenAPI document."""
    for event_type in WEBHOOK_EVENT_TYPES:
        data = EVENT_DATA_TYPES[event_type]
        app.webhooks.add_api_route(
            event_type,
            _receiver(_envelope(event_type, data)),
            methods=["POST"],
            summary=event_type,
            description=f"{_what_it_tells(event_type)}.\n\n{DELIVERY}",
            operation_id=f"webhook_{event_type.replace('.', '_')}",
            response_class=Response,
            status_code=200,
            responses={
                200: {"description": "any 2xx: received, whatever its body"},
                "default": {
                    "description": "anything else, or no answer within 15 s: sent again on the retry schedule;"
                    " 410 Gone disables the endpoint"
                },
            },
        )
