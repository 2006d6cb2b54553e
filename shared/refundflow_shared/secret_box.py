"""Encrypts small secrets (webhook signing secrets, Slack URLs) for the services that share a key ring.

AES-256-GCM. A ciphertext is ``v2.<kid>.<base64url(nonce + sealed)>``: sealed with the ring's first (primary) key,
opened with whichever listed key its kid names, so a key can be rotated without an outage: put the new key first,
keep the old one listed until everything it sealed was sealed again. The AES key is derived from the configured
key with HKDF-SHA256, never the configured bytes themselves. ``v1.`` ciphertexts (the raw key, no kid) still open
with any key of the ring. Each ciphertext is bound to a context (the endpoint or merchant id), so it cannot be
replayed onto another.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_AES_INFO = b"refundflow secret_box v2 aes-256-gcm"
SINGLE_KEY_KID = "k0"  # the kid of a key given alone (WEBHOOK_SECRET_KEY=<base64>)


class SecretBoxError(ValueError):
    """A key ring that is not well formed, or a ciphertext that does not open with it."""


class UnknownKeyId(SecretBoxError):
    """The ciphertext was sealed with a key the ring does not list (anymore)."""


def generate_key() -> str:
    """A new key for ``WEBHOOK_SECRET_KEY`` (or one entry of ``WEBHOOK_SECRET_KEYS``)."""
    return base64.b64encode(os.urandom(32)).decode()


def parse_key_ring(spec: str) -> list[tuple[str, bytes]]:
    """``kid:base64,kid:base64`` (first is primary), or one base64 key alone (kid ``k0``)."""
    if ":" not in spec:
        return [(SINGLE_KEY_KID, _key_bytes(spec.strip(), SINGLE_KEY_KID))]
    ring: list[tuple[str, bytes]] = []
    for entry in spec.split(","):
        kid, _, key = entry.strip().partition(":")
        if not _KID.fullmatch(kid):
            raise SecretBoxError("each key needs an id of 1-32 letters, digits, '-' or '_' (kid:base64)")
        if kid in (known for known, _ in ring):
            raise SecretBoxError(f"the key id {kid!r} is listed twice")
        ring.append((kid, _key_bytes(key.strip(), kid)))
    return ring


def _key_bytes(key_b64: str, kid: str) -> bytes:
    try:
        key = base64.b64decode(key_b64, validate=True)
    except binascii.Error:
        raise SecretBoxError(f"key {kid!r} is not base64") from None
    if len(key) != 32:
        raise SecretBoxError(f"key {kid!r} must be 32 bytes (base64 of os.urandom(32))")
    return key


def _aes_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AES_INFO).derive(key)


class SecretBox:
    def __init__(self, keys: str) -> None:
        ring = parse_key_ring(keys)
        self.primary_kid = ring[0][0]
        self._primary = ring[0][1]
        self._by_kid = {kid: AESGCM(_aes_key(key)) for kid, key in ring}
        self._v1 = [AESGCM(key) for _, key in ring]

    def derive_key(self, purpose: bytes) -> bytes:
        """A key for another use than sealing (a keyed hash), derived from the primary key with HKDF-SHA256."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(self._primary)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._by_kid[self.primary_kid].encrypt(nonce, plaintext.encode(), context.encode())
        return f"v2.{self.primary_kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, ciphertext: str, context: str) -> str:
        version, _, rest = ciphertext.partition(".")
        if version == "v2":
            kid, _, body = rest.partition(".")
            aead = self._by_kid.get(kid)
            if aead is None:
                raise UnknownKeyId(f"sealed with key {kid[:32]!r}, which WEBHOOK_SECRET_KEYS does not list")
            return _open(aead, body, context)
        if version == "v1":
            for aead in self._v1:
                try:
                    return _open(aead, rest, context)
                except SecretBoxError:
                    continue
            raise SecretBoxError("the v1 ciphertext does not open with any key of the ring and this context")
        raise SecretBoxError(f"unknown ciphertext version {version[:8]!r}")


def _open(aead: AESGCM, body: str, context: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(body)
        return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
    except (binascii.Error, InvalidTag, ValueError):
        raise SecretBoxError("the ciphertext does not open with this key and context") from None
