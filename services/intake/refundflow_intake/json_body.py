"""What every JSON request body shares: unknown fields refused, and numbers read as JSON Schema reads them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def whole_number(value: object) -> object:
    """JSON does not tell 1500.0 from 1500, and JSON Schema calls both integers: a whole float is the integer.
    Anything else (1500.5, "1500", true) is left for the strict integer fields to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class JsonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        # This body's own fields only: a nested body reads its own (no recursion into hostile nesting).
        return {key: whole_number(value) for key, value in data.items()} if isinstance(data, dict) else data
