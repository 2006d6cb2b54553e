"""Which topics and consumer groups a deployment has: one topic per event type plus its ``.dlq``, and one consumer
group per service, all named with TOPIC_PREFIX in front."""

from __future__ import annotations

from refundflow_cli.outcomes import NotFound
from refundflow_shared.event_contract import CONTRACTS
from refundflow_shared.events import EventType, dlq_topic, topic_for

SERVICES = tuple(CONTRACTS)

# The event types each service's consumer group reads, from the services' contract (their consumers refuse to
# start with other handlers). Lag is only meaningful for these: Tansu answers offset 0 for a partition a group
# never committed, so the committed offsets alone cannot tell.
CONSUMES: dict[str, frozenset[EventType]] = {name: frozenset(c.consumes) for name, c in CONTRACTS.items()}


def group_of(service: str, prefix: str) -> str:
    return f"{prefix}{service}"


def service_of(group: str, prefix: str) -> str | None:
    """The service whose group this is, if it is one of ours."""
    name = group.removeprefix(prefix) if group.startswith(prefix) else None
    return name if name in SERVICES else None


def resolve_group(name: str, prefix: str) -> str:
    """``notifier`` or ``<prefix>notifier`` -> the group id; any other name is taken as it is."""
    return group_of(name, prefix) if name in SERVICES else name


def event_type_of(name: str, prefix: str) -> EventType:
    """The event type a topic name given by an operator refers to: ``refund.approved``, its ``.dlq``, with or
    without the prefix."""
    bare = name.removeprefix(prefix) if prefix and name.startswith(prefix) else name
    bare = bare.removesuffix(".dlq")
    try:
        return EventType(bare)
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise NotFound(f"no topic {name!r}; the topics are: {known} (each with a .dlq)") from None


def full_topic(name: str, prefix: str) -> str:
    """The topic's name on the broker, prefix included (a ``.dlq`` suffix kept)."""
    topic = topic_for(event_type_of(name, prefix), prefix)
    return dlq_topic(topic) if name.endswith(".dlq") else topic


def short_name(topic: str, prefix: str) -> str:
    return topic.removeprefix(prefix) if prefix else topic
