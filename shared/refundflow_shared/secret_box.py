"""Encrypts small secrets (webhook signing secrets) for the services that share one key: AES-256-GCM.

The ciphertext is bound to a context (the endpoint id), so it cannot be replayed onto another endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class SecretBoxError(ValueError):
    """A key that is not 32 base64 bytes, or a ciphertext that does not open with it."""


def generate_key() -> str:
    """A new key for ``WEBHOOK_SECRET_KEY``."""
    return base64.b64encode(os.urandom(32)).decode()


class SecretBox:
    def __init__(self, key_b64: str) -> None:
        try:
            key = base64.b64decode(key_b64, validate=True)
        except binascii.Error:
            raise SecretBoxError("the key is not base64") from None
        if len(key) != 32:
            raise SecretBoxError("the key must be 32 bytes (base64 of os.urandom(32))")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, ciphertext: str, context: str) -> str:
        version, _, body = ciphertext.partition(".")
        if version != _VERSION:
            raise SecretBoxError(f"unknown ciphertext version {version!r}")
        try:
            raw = base64.urlsafe_b64decode(body)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (binascii.Error, InvalidTag, ValueError):
            raise SecretBoxError("the ciphertext does not open with this key and context") from None


def derived_token(key_b64: str, purpose: str) -> str:
    """A bearer token both key holders can compute (e.g. intake calling the notifier's internal API)."""
    return hmac.new(base64.b64decode(key_b64), purpose.encode(), hashlib.sha256).hexdigest()
