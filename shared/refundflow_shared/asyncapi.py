"""The AsyncAPI 3.0 document of one service, generated from its event contract and the payload models.

Channels are the (prefixed) topics it receives on and sends to, each consumed topic's ``.dlq`` included;
messages carry the CloudEvents headers (binary mode) and the payload's JSON Schema from the pydantic model.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from refundflow_shared.dead_letters import REASONS
from refundflow_shared.event_contract import ServiceContract
from refundflow_shared.events import (
    CONTENT_TYPE,
    EVENT_DATA_TYPES,
    SPEC_VERSION,
    Event,
    EventType,
    dlq_topic,
    topic_for,
)

VERSION = "0.1.0"
_KAFKA_BINDING = "0.5.0"
_STRING: dict[str, Any] = {"type": "string"}

# Why a message was dead-lettered: the decoding codes, then the handler's outcomes (and refund.submit's refusals).
DLQ_REASONS = f"{', '.join(REASONS)}; on refund.submit.dlq also the refusal's error code"


def asyncapi_document(contract: ServiceContract, prefix: str = "") -> dict[str, Any]:
    """The service's AsyncAPI 3.0 document, its topics named with ``prefix`` as deployed."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    used = sorted({*contract.consumes, *contract.publishes})
    for event_type in used:
        name = EVENT_DATA_TYPES[event_type].__name__
        messages[name] = _event_message(event_type)
        channels[event_type.value] = _channel(topic_for(event_type, prefix), name, _channel_text(contract, event_type))
    for event_type, why in contract.consumes.items():
        name = EVENT_DATA_TYPES[event_type].__name__
        operations[f"receive.{event_type.value}"] = _operation("receive", event_type.value, name, why, contract, prefix)
    for event_type, why in contract.publishes.items():
        name = EVENT_DATA_TYPES[event_type].__name__
        operations[f"send.{event_type.value}"] = _operation("send", event_type.value, name, why, contract, prefix)
    for event_type in sorted(contract.consumes):
        name = f"{EVENT_DATA_TYPES[event_type].__name__}DeadLetter"
        channel = dlq_topic(event_type.value)
        messages[name] = _dead_letter_message(event_type, contract)
        text = f"{event_type.value} messages {contract.service} could not handle, with why"
        channels[channel] = _channel(dlq_topic(topic_for(event_type, prefix)), name, text)
        operations[f"send.{channel}"] = _operation("send", channel, name, text, contract, prefix)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Refundflow {contract.service} events",
            "version": VERSION,
            "description": (
                f"{contract.title}. CloudEvents {SPEC_VERSION} in Kafka binary mode (ce_* headers, JSON data); one "
                "topic per event type; key = payment id (or merchant id for merchant-wide events), so one "
                "payment's events stay in order; every consumed topic has a dead-letter topic <topic>.dlq."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _payload_schemas(used)},
    }


def _channel_text(contract: ServiceContract, event_type: EventType) -> str:
    said = [f"receives: {contract.consumes[event_type]}"] if event_type in contract.consumes else []
    said += [f"sends: {contract.publishes[event_type]}"] if event_type in contract.publishes else []
    return "; ".join(said)


def _channel(address: str, message: str, description: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"topic": address, "bindingVersion": _KAFKA_BINDING}},
    }


def _operation(
    action: str, channel: str, message: str, why: str, contract: ServiceContract, prefix: str
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        "summary": why,
    }
    if action == "receive":
        group = {"type": "string", "enum": [f"{prefix}{contract.service}"]}
        operation["bindings"] = {"kafka": {"groupId": group, "bindingVersion": _KAFKA_BINDING}}
    return operation


def _key() -> dict[str, Any]:
    text = "the partition key: the payment id, or the merchant id for merchant-wide events"
    return {"kafka": {"key": {**_STRING, "description": text}, "bindingVersion": _KAFKA_BINDING}}


# The envelope's bounds as the decoder holds them (``Event``): a header past them is dead-lettered.
_ENVELOPE = Event.model_json_schema()["properties"]
_SEQUENCE_MAX: int = _ENVELOPE["sequence"]["maximum"]


def _bounds(field: str) -> dict[str, int]:
    """The length bounds of the envelope's ``field``."""
    return {key: _ENVELOPE[field][key] for key in ("minLength", "maxLength") if key in _ENVELOPE[field]}


def cloudevents_headers(event_type: EventType) -> dict[str, Any]:
    """The ``ce_*`` headers of an event of ``event_type`` (CloudEvents binary mode)."""
    data = EVENT_DATA_TYPES[event_type]
    properties: dict[str, Any] = {
        "ce_specversion": {**_STRING, "const": SPEC_VERSION},
        "ce_id": {**_STRING, "format": "uuid", "description": "unique per event: consumers skip repeats by it"},
        "ce_source": {**_STRING, **_bounds("source"), "description": "the publishing service, refundflow/<service>"},
        "ce_type": {**_STRING, "const": event_type.value},
        "ce_time": {**_STRING, "format": "date-time", "description": "when it happened, with a UTC offset"},
        "ce_subject": {
            **_STRING,
            **_bounds("subject"),
            "description": "what it is about: the refund id, else the partition key",
        },
        "ce_dataschema": {**_STRING, "const": data.dataschema(), "description": "the payload's schema version"},
        "ce_sequence": {
            **_STRING,
            "pattern": "^[1-9][0-9]*$",
            "maxLength": len(str(_SEQUENCE_MAX)),
            "description": f"per key and source, gap-free, at most {_SEQUENCE_MAX}",
        },
        "ce_partitionkey": {**_STRING, "description": "the Kafka key"},
        "content-type": {**_STRING, "const": CONTENT_TYPE},
    }
    optional = {
        "ce_traceparent": {
            **_STRING,
            "maxLength": 256,
            "description": "W3C trace context (CloudEvents distributed tracing); an invalid one starts a new trace",
        }
    }
    return {"type": "object", "required": list(properties), "properties": {**properties, **optional}}


def dead_letter_headers() -> dict[str, Any]:
    """The headers of a dead letter: the original's (as they were, when readable) plus why it failed."""
    properties: dict[str, Any] = {
        "dlq_reason": {**_STRING, "description": f"a stable code: {DLQ_REASONS}"},
        "dlq_error": {**_STRING, "maxLength": 4000, "description": "fields and problems, never customers' data"},
        "dlq_consumer": {**_STRING, "description": "the consumer group's service that gave up"},
        "dlq_original_topic": {**_STRING, "description": "the topic it was read from: the channel's, without .dlq"},
        "dlq_original_partition": {**_STRING, "pattern": "^[0-9]+$"},
        "dlq_original_offset": {**_STRING, "pattern": "^[0-9]+$"},
        "dlq_failed_at": {**_STRING, "format": "date-time"},
        "dlq_dropped": {**_STRING, "description": "present when the original value (or headers) was too large"},
    }
    required = ["dlq_reason", "dlq_error", "dlq_consumer", "dlq_original_topic", "dlq_failed_at"]
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": _STRING,  # the original's headers, ce_* included, as read
    }


def _event_message(event_type: EventType) -> dict[str, Any]:
    data = EVENT_DATA_TYPES[event_type]
    return {
        "name": event_type.value,
        "title": data.__name__,
        "summary": (data.__doc__ or event_type.value).strip().splitlines()[0],
        "contentType": CONTENT_TYPE,
        "headers": cloudevents_headers(event_type),
        "payload": {"$ref": f"#/components/schemas/{data.__name__}"},
        "bindings": _key(),
    }


def _dead_letter_message(event_type: EventType, contract: ServiceContract) -> dict[str, Any]:
    return {
        "name": dlq_topic(event_type.value),
        "title": f"{EVENT_DATA_TYPES[event_type].__name__} dead letter",
        "summary": f"a {event_type.value} message {contract.service} parked, with why (replayable)",
        "headers": dead_letter_headers(),
        "payload": {"description": "the original value as it was read (maybe not JSON; empty when dropped)"},
        "bindings": _key(),
    }


def _payload_schemas(event_types: list[EventType]) -> dict[str, Any]:
    models = [(EVENT_DATA_TYPES[event_type], "validation") for event_type in event_types]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas
