"""Strict base64url (RFC 7515 §2): no padding, no whitespace, canonical only.

Python's decoder forgives a lot (padding, stray bits in the last character);
a verifier that forgives lets one token have many spellings, which breaks
caches and "seen this token" checks. We accept exactly one spelling.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(rb"\A[A-Za-z0-9_-]*\Z")
# For a final group of 2 or 3 characters, the bits past the last full byte
# must be zero; these are the only last characters that satisfy that.
_CANONICAL_LAST_OF_2 = frozenset(b"AQgw")
_CANONICAL_LAST_OF_3 = frozenset(b"AEIMQUYcgkosw048")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode_strict(value: str | bytes) -> bytes:
    """Decode, or raise ValueError if ``value`` is not canonical base64url."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if not _ALPHABET.match(raw):
        raise ValueError("not base64url")
    rem = len(raw) % 4
    if rem == 1:
        raise ValueError("impossible base64url length")
    if rem == 2 and raw[-1] not in _CANONICAL_LAST_OF_2:
        raise ValueError("non-canonical base64url")
    if rem == 3 and raw[-1] not in _CANONICAL_LAST_OF_3:
        raise ValueError("non-canonical base64url")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as exc:  # pragma: no cover - guarded above
        raise ValueError("not base64url") from exc
