"""The OpenAPI examples are real bodies: each validates against the model that shows it."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

from refundflow_intake.api import account_schemas, insight_schemas, portal_schemas, schemas

MODELS = [
    cls
    for module in (schemas, account_schemas, portal_schemas, insight_schemas)
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
