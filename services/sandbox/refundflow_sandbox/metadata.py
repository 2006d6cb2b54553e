"""Stripe's metadata: ``metadata[key]`` form fields, its limits, and how an update merges them. No HTTP here."""

from __future__ import annotations

import re

from refundflow_sandbox.stripe_errors import ApiError, invalid_request

METADATA_FIELD = re.compile(r"^metadata\[(?P<key>[^\[\]]+)\]$")
# Stripe's metadata limits.
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
TOO_MANY_KEYS = f"Invalid metadata: metadata cannot have more than {MAX_METADATA_KEYS} keys."


def checked_metadata(given: dict[str, str]) -> dict[str, str]:
    """``given`` if each key and value is within Stripe's lengths (an empty value, which unsets a key, is too)."""
    for key, value in given.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid_request(
                f"Invalid metadata: keys can be at most {MAX_METADATA_KEY_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise invalid_request(
                f"Invalid metadata: values can be at most {MAX_METADATA_VALUE_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
    return given


def too_many_keys() -> ApiError:
    return invalid_request(TOO_MANY_KEYS, param="metadata")


def merged_metadata(current: dict[str, str], given: dict[str, str]) -> dict[str, str] | None:
    """As Stripe updates an object's metadata: the keys given replace its own, an empty value removes one, the
    others stay. None when more than ``MAX_METADATA_KEYS`` would remain."""
    merged = {key: value for key, value in {**current, **given}.items() if value != ""}
    return merged if len(merged) <= MAX_METADATA_KEYS else None
