"""The services' event contract, without any server: every event type has a consumer or a publisher, the real
handler registrations are exactly the contract, a handler or an event outside it fails, and the AsyncAPI documents
generated from it cover every topic and resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from refundflow_cli.topic_names import CONSUMES
from refundflow_intake import event_handlers as intake_handlers
from refundflow_intake.awaited_events import AwaitingEvents
from refundflow_intake.domain import RefundReason
from refundflow_intake.refund_commands import refusal_codes
from refundflow_notifier import event_handlers as notifier_handlers
from refundflow_notifier.settings import NotifierSettings
from refundflow_processor import event_handlers as processor_handlers
from refundflow_shared.asyncapi import asyncapi_document
from refundflow_shared.asyncapi_page import render_page
from refundflow_shared.consumer import EventConsumer
from refundflow_shared.event_contract import CONTRACTS, INTAKE, NOTIFIER, PROCESSOR, ContractBroken
from refundflow_shared.events import (
    Event,
    EventType,
    RefundApproved,
    RefundSubmit,
    TeamAlertRaised,
    dlq_topic,
    topic_for,
)
from refundflow_shared.outbox import add_event
from refundflow_shared.settings import ServiceSettings

PREFIX = "t1."


def consumer(name: str) -> EventConsumer:
    settings = ServiceSettings(topic_prefix=PREFIX)
    return EventConsumer(name, KafkaBroker("unused:9092"), cast(asyncpg.Pool, None), settings)


def registered(name: str) -> EventConsumer:
    """A consumer with the service's real handlers, as its app registers them."""
    registering = consumer(name)
    if name == "intake":
        runtime = cast(Any, SimpleNamespace(consumer=registering, settings=ServiceSettings(topic_prefix=PREFIX)))
        clock = lambda: datetime.now(UTC)  # noqa: E731
        awaiting = AwaitingEvents(registering, PREFIX, timedelta(minutes=5), clock)
        intake_handlers.register(runtime, clock, cast(Any, None), awaiting)
    elif name == "processor":
        processor_handlers.register(registering)
    else:
        notifier_handlers.register(registering, NotifierSettings())
    return registering


def test_every_event_type_is_consumed_or_published_by_a_service() -> None:
    named = {t for contract in CONTRACTS.values() for t in (*contract.consumes, *contract.publishes)}
    assert named == set(EventType)


@pytest.mark.parametrize("service", sorted(CONTRACTS))
def test_each_services_real_handlers_are_exactly_what_its_contract_consumes(service: str) -> None:
    running = registered(service)
    running.subscribe()  # would raise ContractBroken
    assert set(running.topics) == {topic_for(t, PREFIX) for t in CONTRACTS[service].consumes}
    assert CONSUMES[service] == set(CONTRACTS[service].consumes)  # the command line's lag table reads the same


def test_a_handler_registered_outside_the_contract_fails_start_up() -> None:
    running = registered("processor")

    @running.handles(TeamAlertRaised)
    async def stray(conn: asyncpg.Connection, event: Event, data: TeamAlertRaised) -> None: ...

    with pytest.raises(ContractBroken, match=r"processor handles \['team_alert\.raised'\] its contract does not list"):
        running.subscribe()


def test_a_consumer_missing_a_handler_of_its_contract_fails_start_up() -> None:
    running = consumer("notifier")  # nothing registered: it would silently consume nothing
    with pytest.raises(ContractBroken, match="no handler for"):
        running.subscribe()


async def test_staging_an_event_the_service_does_not_publish_is_refused_before_anything_is_written() -> None:
    approved = RefundApproved(
        refund_id="ref_1",
        payment_id="pay_1",
        merchant_id="mer_1",
        customer_email="a@example.com",
        amount=100,
        currency="EUR",
        provider_payment_id="pi_1",
        payment_amount=100,
        approved_by="ops",
    )
    no_connection = cast(asyncpg.Connection, None)  # refused before the connection is touched
    with pytest.raises(ContractBroken, match=r"processor may not publish refund\.approved"):
        await add_event(no_connection, approved, source=PROCESSOR.source)
    with pytest.raises(ContractBroken, match=r"no event contract for the source 'refundflow/billing'"):
        await add_event(no_connection, approved, source="refundflow/billing")


async def test_a_consumer_dead_letters_only_the_topics_it_consumes() -> None:
    running = registered("processor")
    with pytest.raises(ContractBroken, match="does not consume"):
        await running.dead_letter(topic_for(EventType.REFUND_REQUESTED, PREFIX), None, b"{}", {}, "x", "y")


def _addresses(document: dict[str, Any], action: str | None = None) -> set[str]:
    channels = document["channels"]
    return {
        channels[operation["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for operation in document["operations"].values()
        if action is None or operation["action"] == action
    }


def test_the_asyncapi_documents_cover_every_topic_and_every_consumed_topics_dead_letters() -> None:
    documents = {name: asyncapi_document(contract, PREFIX) for name, contract in CONTRACTS.items()}
    covered = set().union(*(_addresses(document) for document in documents.values()))
    topics = {topic_for(t, PREFIX) for t in EventType}
    consumed = {topic_for(t, PREFIX) for contract in CONTRACTS.values() for t in contract.consumes}
    assert covered == topics | {dlq_topic(topic) for topic in consumed}
    # Only the platform reads refund.submit_rejected: its dead letters are the platform's, not in our documents.
    assert topics - consumed == {topic_for(EventType.REFUND_SUBMIT_REJECTED, PREFIX)}
    for name, document in documents.items():
        contract = CONTRACTS[name]
        assert _addresses(document, "receive") == {topic_for(t, PREFIX) for t in contract.consumes}
        sent = {topic_for(t, PREFIX) for t in contract.publishes} | {
            dlq_topic(t) for t in _addresses(document, "receive")
        }
        assert _addresses(document, "send") == sent


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.mark.parametrize("contract", [INTAKE, PROCESSOR, NOTIFIER], ids=lambda c: c.service)
def test_every_reference_in_the_asyncapi_document_resolves(contract: Any) -> None:
    document = asyncapi_document(contract, PREFIX)
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_the_asyncapi_document_carries_cloudevents_headers_payload_schemas_and_dead_letter_reasons() -> None:
    document = asyncapi_document(INTAKE, PREFIX)
    approved = document["components"]["messages"]["RefundApproved"]
    assert approved["headers"]["properties"]["ce_type"]["const"] == "refund.approved"
    assert {"ce_id", "ce_source", "ce_sequence", "ce_dataschema"} <= set(approved["headers"]["required"])
    assert "ce_traceparent" in approved["headers"]["properties"], "the trace travels on every event"
    assert "ce_traceparent" not in approved["headers"]["required"]
    submit = document["components"]["schemas"]["RefundSubmit"]
    assert {"payment_id", "merchant_id", "idempotency_key", "reason", "amount"} <= submit["properties"].keys()
    dead = document["components"]["messages"]["RefundSubmitDeadLetter"]
    assert {"dlq_reason", "dlq_error", "dlq_consumer", "dlq_original_topic"} <= set(dead["headers"]["required"])
    assert document["channels"]["refund.submit.dlq"]["address"] == "t1.refund.submit.dlq"


def test_the_asyncapi_document_bounds_headers_and_currencies_as_the_decoder_does() -> None:
    """The document let through what every consumer dead-letters: a 300-character source, an empty or
    300-character subject, a sequence past 2^63 - 1, a currency that is no ISO 4217 code."""
    document = asyncapi_document(INTAKE, PREFIX)
    headers = document["components"]["messages"]["RefundApproved"]["headers"]["properties"]
    assert headers["ce_source"]["maxLength"] == 200
    assert (headers["ce_subject"]["minLength"], headers["ce_subject"]["maxLength"]) == (1, 255)
    assert headers["ce_sequence"]["maxLength"] == len(str(2**63 - 1))
    assert str(2**63 - 1) in headers["ce_sequence"]["description"]
    currency = document["components"]["schemas"]["RefundApproved"]["properties"]["currency"]
    assert "EUR" in currency["enum"] and "JPY" in currency["enum"] and "XYZ" not in currency["enum"]


def test_the_asyncapi_document_lists_the_reasons_a_refund_submit_may_give_and_the_codes_it_is_refused_with() -> None:
    """It said any string of 1 to 100 characters was a reason, though intake refuses all but its own reasons
    (invalid_reason), and gave no refusal code at all."""
    schemas = asyncapi_document(INTAKE, PREFIX)["components"]["schemas"]
    assert schemas["RefundSubmit"]["properties"]["reason"]["enum"] == [reason.value for reason in RefundReason]
    code = schemas["RefundSubmitRejected"]["properties"]["code"]
    listed = set(code["examples"])
    assert {"invalid_reason", "payment_not_found", "refund_exceeds_refundable", "payment_disputed"} <= listed
    assert listed <= refusal_codes(), "each is a code intake refuses a command with"
    assert all(f"`{refusal}`" in code["description"] for refusal in listed)
    # The message still takes another reason, so that intake can answer it (invalid_reason) rather than park it.
    assert (
        RefundSubmit.model_validate(
            {
                "payment_id": "pay_1",
                "merchant_id": "mer_1",
                "idempotency_key": "k",
                "reason": "bored",
                "submitted_by": "b",
            }
        ).reason
        == "bored"
    )


def test_the_asyncapi_page_lists_channels_and_payload_fields_and_loads_nothing_from_elsewhere() -> None:
    page = render_page(asyncapi_document(PROCESSOR, PREFIX))
    assert '<h3 id="receives-refund.approved">t1.refund.approved</h3>' in page
    assert '<h3 id="dead-letters-refund.approved.dlq">t1.refund.approved.dlq</h3>' in page
    assert '<th scope="row">provider_refund_id</th>' in page  # refund.succeeded's payload, sent
    assert "<caption>Fields of Headers of every dead letter</caption>" in page
    assert "<script" not in page and "<link" not in page and "http" not in page.replace('href="#', "")
