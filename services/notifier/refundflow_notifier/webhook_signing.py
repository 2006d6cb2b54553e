"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over id, timestamp and body."""

from __future__ import annotations

import base64
import os
from datetime import datetime

from standardwebhooks.webhooks import Webhook


def new_signing_secret() -> str:
    """A ``whsec_`` secret: 24 random bytes, base64, as the specification suggests."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_headers(secrets: list[str], webhook_id: str, timestamp: datetime, payload: str) -> dict[str, str]:
    """One ``v1,`` signature per secret, space-separated (the endpoint's, then the one it rolled from while that
    still signs): a receiver that knows either verifies."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(webhook_id, timestamp, payload) for secret in secrets),
        "content-type": "application/json",
        "user-agent": "Refundflow-Webhooks/1",
    }
