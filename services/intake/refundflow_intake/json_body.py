"""What every JSON request body shares: unknown fields refused, and numbers read as JSON Schema reads them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def whole_numbers(data: Any) -> Any:
    """JSON does not tell 1500.0 from 1500, and JSON Schema calls both integers: a whole float becomes the integer.
    Anything else (1500.5, "1500", true) is left for the strict integer fields to refuse."""
    if isinstance(data, float) and data.is_integer():
        return int(data)
    if isinstance(data, dict):
        return {key: whole_numbers(value) for key, value in data.items()}
    if isinstance(data, list):
        return [whole_numbers(value) for value in data]
    return data


class JsonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        return whole_numbers(data)
