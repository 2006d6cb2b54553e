"""The published contracts: OpenAPI (every error code, examples, error shape) and AsyncAPI, both served."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from refundflow_intake import rate_limit, refund_commands
from refundflow_intake.domain import DomainError
from refundflow_intake.portal import tokens as portal_tokens
from refundflow_shared.asyncapi import asyncapi_document
from refundflow_shared.event_contract import INTAKE
from refundflow_shared.events import EVENT_DATA_TYPES, WEBHOOK_EVENT_TYPES
from tests.support.intake_harness import IntakeUnderTest, running_intake

pytestmark = pytest.mark.asyncio(loop_scope="session")
PUBLIC = {"/healthz", "/readyz", "/asyncapi.json", "/asyncapi", "/v1/public/merchants/{merchant_id}/refund-policy"}


@pytest.fixture(scope="module")
async def intake(postgres_url: str, kafka_bootstrap: str) -> AsyncIterator[IntakeUnderTest]:
    async with running_intake(postgres_url, kafka_bootstrap) as running:
        yield running


@pytest.fixture(scope="module")
async def openapi(intake: IntakeUnderTest) -> dict[str, Any]:
    response = await intake.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _all_subclasses(cls: type[DomainError]) -> set[type[DomainError]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _operations(openapi: dict[str, Any], *, webhooks: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """The API's operations; the webhook ones (bodies without examples yet) only when asked for."""
    return [
        (path, method, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
        if path.startswith("/v1/") and (webhooks or (not path.startswith("/v1/webhook") and "notification" not in path))
    ]


async def test_every_domain_error_code_is_listed_in_the_openapi(openapi: dict[str, Any]) -> None:
    assert refund_commands and portal_tokens and rate_limit  # their errors are DomainErrors too
    listed = "\n".join(
        response.get("description", "")
        for _, _, operation in _operations(openapi, webhooks=True)
        for response in operation["responses"].values()
    )
    api_errors = {e.code for e in _all_subclasses(DomainError) if e.in_api}  # the others: the dashboard's own
    codes = api_errors - {"not_found", "invalid_reason"}  # base; command-only
    missing = {code for code in codes if f"`{code}`" not in listed}
    assert missing == set()


async def test_every_operation_documents_its_errors_in_one_shape_with_an_example(openapi: dict[str, Any]) -> None:
    for path, method, operation in _operations(openapi):
        errors = {status: r for status, r in operation["responses"].items() if status.startswith("4")}
        assert "422" in errors, (method, path)
        if path not in PUBLIC:
            assert "401" in errors, (method, path)
        for response in errors.values():
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
            assert set(content["example"]["error"]) >= {"code", "message"}, (method, path)
        assert operation.get("description") or operation.get("summary"), (method, path)


async def test_request_bodies_carry_examples(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for path, method, operation in _operations(openapi):
        body = operation.get("requestBody")
        if body is None:
            continue
        ref = body["content"]["application/json"]["schema"]
        name = (ref.get("$ref") or ref["anyOf"][0]["$ref"]).rsplit("/", 1)[-1]
        if name.startswith("RefundPolicy"):
            continue  # every field has a default: the schema is its own example
        assert schemas[name].get("examples"), (method, path, name)


async def test_list_endpoints_use_cursor_pagination(openapi: dict[str, Any]) -> None:
    for path in ("/v1/payments", "/v1/refunds"):
        names = {p["name"] for p in openapi["paths"][path]["get"]["parameters"]}
        assert {"limit", "starting_after"} <= names
    assert "has_more" in openapi["components"]["schemas"]["PaymentList"]["properties"]
    assert "has_more" in openapi["components"]["schemas"]["RefundList"]["properties"]


async def test_intake_serves_the_asyncapi_document_and_page_of_its_event_contract(intake: IntakeUnderTest) -> None:
    response = await intake.client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == asyncapi_document(INTAKE, intake.settings.topic_prefix)
    page = await intake.client.get("/asyncapi")
    assert page.status_code == 200
    assert '<h2 id="receives">Receives</h2>' in page.text


async def test_every_operation_shows_an_example_of_its_success_body(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for path, method, operation in _operations(openapi):
        successes = [r for status, r in operation["responses"].items() if status.startswith("2")]
        assert successes, (method, path)
        for success in successes:  # e.g. 201 for a new payment, 200 for the same one registered again
            schema = success["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[-1]
            assert schemas[name].get("examples"), (method, path, name)


async def test_the_openapi_document_lists_rolling_an_endpoints_signing_secret(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/v1/webhook-endpoints/{endpoint_id}/secret"]["post"]
    assert "overlap" in operation["description"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"secret", "previous_secret_expires_at"} <= set(openapi["components"]["schemas"][schema]["properties"])
    assert "webhook_endpoint_not_found" in json.dumps(operation["responses"]["404"])


async def test_the_openapi_document_lists_every_webhook_with_its_envelope_and_data(
    intake: IntakeUnderTest, openapi: dict[str, Any]
) -> None:
    """What a merchant's endpoint receives (CloudEvents in structured mode) is in the document merchants read."""
    schemas = openapi["components"]["schemas"]
    assert set(openapi.get("webhooks", {})) == set(WEBHOOK_EVENT_TYPES)
    for event_type in WEBHOOK_EVENT_TYPES:
        operation = openapi["webhooks"][event_type]["post"]
        assert "webhook-signature" in operation["description"], event_type
        envelope = schemas[operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]]
        assert set(envelope["required"]) == {
            "id", "source", "type", "time", "subject", "specversion", "dataschema", "sequence", "data"
        }  # fmt: skip
        assert envelope["properties"]["type"]["const"] == event_type
        data = schemas[envelope["properties"]["data"]["$ref"].rsplit("/")[-1]]
        fields = set(EVENT_DATA_TYPES[event_type].model_fields) - {"portal_link"}
        assert set(data["properties"]) == fields, f"{event_type}: every field but the customer's sealed portal link"
        assert any(status.startswith("2") for status in operation["responses"]), event_type
    page = await intake.client.get("/docs")
    assert all(f'id="webhook-{event_type}"' in page.text for event_type in WEBHOOK_EVENT_TYPES)
