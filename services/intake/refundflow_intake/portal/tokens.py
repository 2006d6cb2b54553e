"""Signed, expiring portal tokens: a customer may ask about one payment, and nothing else. No I/O here.

A token is ``pt_<payload>.<signature>``: the payload (merchant, payment, expiry) in base64url JSON, signed
with HMAC-SHA256. Nothing is stored: the signature proves we issued it, the expiry bounds it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from refundflow_intake.domain import DomainError

PREFIX = "pt_"


class InvalidPortalToken(DomainError):
    code = "invalid_portal_token"


class PortalTokenExpired(InvalidPortalToken):
    code = "portal_token_expired"


@dataclass(frozen=True)
class PortalGrant:
    merchant_id: str
    payment_id: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def issue(secret: bytes, grant: PortalGrant) -> str:
    claims = {"m": grant.merchant_id, "p": grant.payment_id, "exp": int(grant.expires_at.timestamp())}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{PREFIX}{payload}.{_sign(secret, payload)}"


def verify(secret: bytes, token: str, now: datetime) -> PortalGrant:
    """The grant the token carries; raises when it is not ours, was altered, or has expired."""
    payload, _, signature = token.removeprefix(PREFIX).partition(".")
    # Compared as bytes: a token is the caller's text, and compare_digest refuses non-ASCII str.
    if not token.startswith(PREFIX) or not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise InvalidPortalToken("the portal token is not valid")
    try:
        claims = json.loads(_unb64(payload))
        grant = PortalGrant(
            merchant_id=str(claims["m"]),
            payment_id=str(claims["p"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPortalToken("the portal token is not valid") from exc
    if now >= grant.expires_at:
        raise PortalTokenExpired("the portal token has expired: ask the merchant for a new link")
    return grant
