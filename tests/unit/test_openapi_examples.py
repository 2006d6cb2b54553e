"""The OpenAPI examples are real bodies: each validates against the model that shows it."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

from refundflow_intake.api import account_schemas, customer_schemas, insight_schemas, portal_schemas, schemas

MODELS = [
    cls
    for module in (schemas, account_schemas, portal_schemas, insight_schemas, customer_schemas)
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, BaseModel) and cls.__module__ == module.__name__
]


@pytest.mark.parametrize("model", [m for m in MODELS if (m.model_config.get("json_schema_extra") or {})])
def test_every_example_validates_against_its_model(model: type[BaseModel]) -> None:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    examples = extra["examples"]
    assert isinstance(examples, list) and examples
    for example in examples:
        model.model_validate(example)


# The money a body answers with, besides fields named amount or *_amount.
MONEY_FIELDS = {"BalanceLine": {"paid", "refunded", "held", "available"}, "BalanceDisputes": {"disputed"}}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_amount_in_a_body_says_it_is_in_minor_units(model: type[BaseModel]) -> None:
    properties = model.model_json_schema(mode="serialization")["properties"]
    money = {
        name
        for name in properties
        if name == "amount" or name.endswith("_amount") or name in MONEY_FIELDS.get(model.__name__, ())
    }
    undescribed = {name for name in money if "minor units" not in properties[name].get("description", "")}

    assert not undescribed, f"{model.__name__}: {sorted(undescribed)} do not say they are in minor units"
