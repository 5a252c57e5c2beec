"""The key string format: ``<prefix><JWT>``.

The prefix says what the key is at a glance (``sk_live_``, ``sk_test_``) and
lets a gateway route it (Envoy's ``value_prefix``). It is lowercase letters,
digits and underscores and always ends with ``_``; since it has no uppercase
letter, the JWT (which always starts with ``eyJ``) begins at the first ``eyJ``.
There is no checksum suffix: it would glue onto the signature for gateways.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from .errors import InvalidKeyString, WrongPrefix

__all__ = [
    "PREFIX_PATTERN",
    "KEY_STRING_PATTERN",
    "KEY_STRING_REGEX",
    "SECRET_SCANNING_PATTERN",
    "ParsedKeyString",
    "is_key_string",
    "validate_prefix",
    "format_key_string",
    "parse_key_string",
]

PREFIX_PATTERN = r"[a-z][a-z0-9]{0,15}_(?:[a-z0-9]{1,16}_){0,3}"
# Our JWT headers start with {"alg":" which base64url-encodes to eyJhbGciOi.
_JWT_PATTERN = r"eyJhbGciOi[A-Za-z0-9_-]{20,}\.eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{40,}"
KEY_STRING_PATTERN = rf"(?P<prefix>{PREFIX_PATTERN})(?P<jwt>{_JWT_PATTERN})"
#: The regex we publish to secret scanners (GitHub's partner program): the same
#: format without named groups or lookaround, which their engines do not take.
SECRET_SCANNING_PATTERN = PREFIX_PATTERN + _JWT_PATTERN
#: For secret scanners: finds our keys in free text.
KEY_STRING_REGEX = re.compile(rf"(?<![A-Za-z0-9_]){KEY_STRING_PATTERN}(?![A-Za-z0-9_-])")
_SCANNED_RE = re.compile(SECRET_SCANNING_PATTERN)
_PREFIX_RE = re.compile(rf"\A{PREFIX_PATTERN}\Z")


@dataclass(frozen=True, slots=True)
class ParsedKeyString:
    prefix: str
    jwt: str

    def __repr__(self) -> str:  # never print the token
        return f"ParsedKeyString(prefix={self.prefix!r}, jwt=<{len(self.jwt)} chars>)"


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValueError(
            "a key prefix is 1-4 groups of lowercase letters and digits, each ending"
            " with '_', starting with a letter (e.g. 'sk_live_')"
        )
    return prefix


def format_key_string(prefix: str, jwt: str) -> str:
    return validate_prefix(prefix) + jwt


def parse_key_string(key: str, prefixes: Collection[str] | None = None) -> ParsedKeyString:
    """Split a key string. With ``prefixes``, the prefix must be one of them."""
    if not isinstance(key, str):
        raise InvalidKeyString()
    at = key.find("eyJ")
    if at <= 0:
        raise InvalidKeyString()
    prefix, jwt = key[:at], key[at:]
    if not _PREFIX_RE.match(prefix):
        raise InvalidKeyString()
    if prefixes is not None and prefix not in prefixes:
        raise WrongPrefix()
    return ParsedKeyString(prefix, jwt)


def is_key_string(text: str) -> bool:
    """Whether ``text`` is, as a whole, in our key string format (nothing verified)."""
    return isinstance(text, str) and _SCANNED_RE.fullmatch(text) is not None
