"""Webhook signing (the Standard Webhooks spec) and the sealing of its secrets. No I/O.

A signature is ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``
under a ``whsec_<base64>`` secret, sent as ``webhook-signature`` with
``webhook-id`` and ``webhook-timestamp``; any Standard Webhooks library
verifies it.

The secret is symmetric: whoever holds it can forge a delivery. So it is never
stored in the clear. :class:`SecretBox` seals it with AES-256-GCM under a key
that lives outside the database (a setting or a file); the endpoint's id is the
associated data, so a sealed secret copied onto another endpoint's row does
not open. A database dump alone holds only ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SECRET_PREFIX", "BadSecret", "SecretBox", "headers", "new_box_key", "new_secret", "sign"]

SECRET_PREFIX = "whsec_"
_SEALED_VERSION = "v1."  # room for a later format or key rotation
_NONCE_BYTES = 12


class BadSecret(ValueError):
    """A secret, sealing key or sealed value that is malformed or does not open."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret("a webhook secret starts with whsec_")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret("a webhook secret is whsec_ followed by base64") from None
    if len(raw) < 24:
        raise BadSecret("a webhook secret has at least 24 bytes")
    return raw


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


def new_box_key() -> str:
    """A fresh sealing key: base64url of 32 random bytes (AES-256)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class SecretBox:
    """Seal and open webhook secrets with AES-256-GCM (random 96-bit nonce each time)."""

    def __init__(self, key_text: str) -> None:
        text = key_text.strip()
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise BadSecret("the webhook key must be 32 bytes, base64url (e.g. `authserver webhooks new-key`)")
        self._aead = AESGCM(key)

    def seal(self, secret: str, context: str) -> str:
        """``secret`` encrypted and bound to ``context`` (the endpoint id)."""
        _secret_bytes(secret)  # only well-formed secrets are sealed
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return _SEALED_VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """The secret, if ``sealed`` was made by this key for this ``context``; else BadSecret."""
        if not sealed.startswith(_SEALED_VERSION):
            raise BadSecret("unknown sealed format")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEALED_VERSION):])
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise BadSecret("the sealed secret does not open with this key (another key, or altered)") from None
