"""Stripe's API-key check: any ``sk_test_`` key is accepted, sent as Bearer or Basic auth."""

from __future__ import annotations

import base64
import binascii

from refundflow_sandbox.stripe_errors import invalid_api_key, missing_api_key

TEST_KEY_PREFIX = "sk_test_"


def api_key_from_authorization(authorization: str | None) -> str:
    """The API key in an Authorization header; raises a 401 ApiError when missing or not a test key."""
    if not authorization:
        raise missing_api_key()
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        # `curl -u sk_test_...:` sends the key as the user name of Basic auth.
        try:
            credentials = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_api_key("") from None
    elif scheme.lower() != "bearer":
        raise missing_api_key()
    if not credentials:
        raise missing_api_key()
    if not credentials.startswith(TEST_KEY_PREFIX) or len(credentials) == len(TEST_KEY_PREFIX):
        raise invalid_api_key(credentials)
    return credentials
