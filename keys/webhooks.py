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

The sealing key rotates: a box holds the current key, which seals, and older
keys, which only open, until every secret is sealed again under the current
one (:meth:`SecretBox.reseal`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SECRET_PREFIX", "BadPreviousKey", "BadSecret", "SecretBox", "headers", "new_box_key", "new_secret", "sign"]

SECRET_PREFIX = "whsec_"
_SEALED_VERSION = "v1."  # room for a later format or key rotation
_NONCE_BYTES = 12


class BadSecret(ValueError):
    """A secret, sealing key or sealed value that is malformed or does not open."""


class BadPreviousKey(BadSecret):
    """One of a :class:`SecretBox`'s previous keys is malformed (not its current key)."""


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


def _aead(key_text: str, bad: type[BadSecret] = BadSecret) -> AESGCM:
    text = key_text.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise bad("the webhook key must be 32 bytes, base64url (e.g. `authserver webhooks new-key`)")
    return AESGCM(key)


class SecretBox:
    """Seal and open webhook secrets with AES-256-GCM (random 96-bit nonce each time).

    ``previous`` keys open what they sealed but never seal: the state between
    putting a new key in place and resealing every secret under it."""

    def __init__(self, key_text: str, previous: tuple[str, ...] = ()) -> None:
        self._aead = _aead(key_text)
        self._previous = tuple(_aead(k, BadPreviousKey) for k in previous)

    def seal(self, secret: str, context: str) -> str:
        """``secret`` encrypted and bound to ``context`` (the endpoint id)."""
        _secret_bytes(secret)  # only well-formed secrets are sealed
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return _SEALED_VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """The secret, if ``sealed`` was made by one of this box's keys for this ``context``; else BadSecret."""
        return self._open(sealed, context)[0]

    def reseal(self, sealed: str, context: str) -> str | None:
        """``sealed`` sealed again under the current key if a previous key made
        it; None if the current key did (nothing to do). BadSecret if none opens it."""
        secret, current = self._open(sealed, context)
        return None if current else self.seal(secret, context)

    def _open(self, sealed: str, context: str) -> tuple[str, bool]:
        if not sealed.startswith(_SEALED_VERSION):
            raise BadSecret("unknown sealed format")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEALED_VERSION):])
        except (binascii.Error, ValueError):
            raise BadSecret("the sealed secret is not base64url") from None
        # the GCM tag decides which key sealed it: a wrong key fails at once
        for aead in (self._aead, *self._previous):
            try:
                secret = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
            except (ValueError, InvalidTag):
                continue
            return secret, aead is self._aead
        raise BadSecret("the sealed secret does not open with this key (another key, or altered)")
