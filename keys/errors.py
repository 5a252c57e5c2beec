"""The one error family of the key core.

Every failure raises a subclass of :class:`KeyCoreError` carrying a short,
stable ``code`` (for logs, metrics and operators) and a human ``description``.
Callers that answer untrusted clients should map any of them to one generic
401 and never echo which check failed.

    KeyCoreError
    ├── InvalidKeyString        code "malformed"         not <prefix><JWS compact> / bad base64url / bad JSON
    │   └── WrongPrefix         code "wrong_prefix"      prefix is not one this verifier accepts
    ├── TokenTooLarge           code "too_large"         over the verifier's size cap
    ├── UnsupportedAlgorithm    code "unsupported_alg"   alg not pinned (includes "none" and HMAC)
    ├── UntrustedHeader         code "untrusted_header"  jku / x5u / jwk / x5c / crit / b64 present
    ├── MissingKeyId            code "missing_kid"
    ├── UnknownKeyId            code "unknown_kid"       kid not in the key set (revoked or never issued)
    ├── BadSignature            code "bad_signature"
    └── InvalidClaims           code "invalid_claims"    iss / aud / typ / required claim wrong
        ├── ExpiredToken        code "expired"
        └── NotYetValid         code "not_yet_valid"     nbf or iat in the future
"""

from __future__ import annotations

__all__ = [
    "KeyCoreError",
    "InvalidKeyString",
    "WrongPrefix",
    "TokenTooLarge",
    "UnsupportedAlgorithm",
    "UntrustedHeader",
    "MissingKeyId",
    "UnknownKeyId",
    "BadSignature",
    "InvalidClaims",
    "ExpiredToken",
    "NotYetValid",
]


class KeyCoreError(Exception):
    code: str = "key_error"
    description: str = "the key could not be processed"

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        super().__init__(f"{self.code}: {self.description}")


class InvalidKeyString(KeyCoreError):
    code = "malformed"
    description = "not a well-formed key string"


class WrongPrefix(InvalidKeyString):
    code = "wrong_prefix"
    description = "the key prefix is not accepted here"


class TokenTooLarge(KeyCoreError):
    code = "too_large"
    description = "the key is larger than allowed"


class UnsupportedAlgorithm(KeyCoreError):
    code = "unsupported_alg"
    description = "the signing algorithm is not allowed"


class UntrustedHeader(KeyCoreError):
    code = "untrusted_header"
    description = "the header carries a parameter that is never trusted"


class MissingKeyId(KeyCoreError):
    code = "missing_kid"
    description = "the header has no key id"


class UnknownKeyId(KeyCoreError):
    code = "unknown_kid"
    description = "no published key has this key id"


class BadSignature(KeyCoreError):
    code = "bad_signature"
    description = "the signature does not verify"


class InvalidClaims(KeyCoreError):
    code = "invalid_claims"
    description = "a claim has an unexpected value"


class ExpiredToken(InvalidClaims):
    code = "expired"
    description = "the key has expired"


class NotYetValid(InvalidClaims):
    code = "not_yet_valid"
    description = "the key is not valid yet"
