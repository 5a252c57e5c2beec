"""A strict verifier for our API keys, for Python callers.

Stricter than a generic JWT library on purpose: one spelling per token
(canonical base64url, exactly three parts, no duplicate JSON members), the
algorithm pinned by the caller *and* by the key's own JWK, a kid required,
headers that point elsewhere for keys (jku, x5u, jwk, x5c) or demand
extensions (crit, b64) refused, ES256 signatures low-S only, NumericDates
integers, and time taken from an injected clock. The signature check itself
is joserfc's, under a registry that enforces the same header rules.
Every failure raises a :class:`keys.errors.KeyCoreError` subclass.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from joserfc.errors import JoseError
from joserfc.util import urlsafe_b64decode

from ._algorithms import DEFAULT_ALGORITHM, get_algorithm
from ._claims import check_numeric_dates
from ._jose import UNTRUSTED_HEADERS, JWSPolicy, verify_compact
from ._jwk import VerificationKey, load_public_jwk
from .errors import (
    BadSignature,
    ExpiredToken,
    InvalidClaims,
    InvalidKeyString,
    MissingKeyId,
    NotYetValid,
    TokenTooLarge,
    UnknownKeyId,
    UnsupportedAlgorithm,
    UntrustedHeader,
)
from .keystring import parse_key_string

__all__ = ["KeyLookup", "PublicKeySet", "VerifiedKey", "Verifier", "UNTRUSTED_HEADERS", "unverified_kid"]

DEFAULT_MAX_TOKEN_BYTES = 8192


class KeyLookup(Protocol):
    def get(self, kid: str, /) -> VerificationKey | None: ...


class PublicKeySet:
    """kid -> parsed public key, built from published JWKs.

    Parsed objects are kept (parsing a JWK costs far more than a lookup).
    """

    def __init__(self, jwks: Collection[Mapping[str, Any]] = ()) -> None:
        self._keys: dict[str, VerificationKey] = {}
        for jwk in jwks:
            self.add(jwk)

    @classmethod
    def from_jwks_document(cls, document: Mapping[str, Any] | bytes | str) -> PublicKeySet:
        parsed: Mapping[str, Any] = document if isinstance(document, Mapping) else json.loads(document)
        return cls(parsed["keys"])

    def add(self, jwk: Mapping[str, Any]) -> VerificationKey:
        key = load_public_jwk(jwk)
        self._keys[key.kid] = key
        return key

    def remove(self, kid: str) -> bool:
        return self._keys.pop(kid, None) is not None

    def get(self, kid: str, /) -> VerificationKey | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    kid: str
    algorithm: str
    prefix: str
    claims: dict[str, Any]
    header: dict[str, Any] = field(repr=False)

    @property
    def subject(self) -> str | None:
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def scopes(self) -> frozenset[str]:
        scope = self.claims.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: an exp of NaN would never expire


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity
        raise ValueError("number out of range")
    return value


def _b64decode(segment: str) -> bytes:
    """Canonical base64url only (joserfc's decoder refuses padding and stray bits)."""
    return urlsafe_b64decode(segment.encode("ascii"))


# one decoder, built once (json.loads with hooks builds a new one per call)
_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, parse_float=_finite_float
)


def _json_object(segment: str) -> dict[str, Any]:
    try:
        obj = _DECODER.decode(_b64decode(segment).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidKeyString() from None
    if not isinstance(obj, dict):
        raise InvalidKeyString()
    return obj


def unverified_kid(key_string: str, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> str:
    """The header's kid, NOT verified: only to pick which verifier to use."""
    if not isinstance(key_string, str):
        raise InvalidKeyString()
    if len(key_string) > max_token_bytes:
        raise TokenTooLarge()
    jwt = parse_key_string(key_string).jwt
    kid = _json_object(jwt.split(".", 1)[0]).get("kid")
    if not isinstance(kid, str) or not kid:
        raise MissingKeyId()
    return kid


class Verifier:
    """Verify ``<prefix><JWT>`` API keys against a key set.

    ``verify`` returns a :class:`VerifiedKey` or raises. Claim checks:
    ``iss`` equal to ``issuer``; ``aud`` equal to (or a list containing)
    ``audience``; ``exp``/``nbf``/``iat`` against ``clock()`` with ``leeway``
    seconds (``future_leeway`` for nbf/iat, if given), each an integer NumericDate;
    ``jti`` equal to the kid (each of our keys signs exactly one token).
    """

    def __init__(
        self,
        keys: KeyLookup,
        *,
        issuer: str | None,
        audience: str | None,
        algorithms: Collection[str] = (DEFAULT_ALGORITHM,),
        prefixes: Collection[str] | None = None,
        leeway: float = 0,
        future_leeway: float | None = None,
        clock: Callable[[], float] = time.time,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        require_jti_is_kid: bool = True,
    ) -> None:
        if not algorithms:
            raise ValueError("pin at least one algorithm")
        for name in algorithms:
            get_algorithm(name)  # only registered, asymmetric algorithms
        self.keys = keys
        self._policy = JWSPolicy(get_algorithm(name) for name in sorted(set(algorithms)))
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.prefixes = None if prefixes is None else frozenset(prefixes)
        self.leeway = leeway
        # clock skew for iat/nbf (a token minted by a host whose clock runs ahead);
        # defaults to leeway
        self.future_leeway = leeway if future_leeway is None else future_leeway
        self.clock = clock
        self.max_token_bytes = max_token_bytes
        self.require_jti_is_kid = require_jti_is_kid

    def verify(self, key_string: str) -> VerifiedKey:
        return self.verify_at(key_string, self.clock())

    def verify_at(self, key_string: str, now: float) -> VerifiedKey:
        if not isinstance(key_string, str):
            raise InvalidKeyString()
        if len(key_string) > self.max_token_bytes:
            raise TokenTooLarge()
        if not key_string.isascii():  # so characters are bytes, and no lookalikes
            raise InvalidKeyString()
        parsed = parse_key_string(key_string, self.prefixes)
        parts = parsed.jwt.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise InvalidKeyString()
        h64, p64, s64 = parts
        header = _json_object(h64)
        # Header first, so an unsecured JWS ("h.p.", alg "none") is reported as
        # unsupported_alg, as documented, not as malformed.
        key = self._key_for(header)
        if not s64:
            raise InvalidKeyString()
        try:
            _b64decode(s64)  # canonical, or it is another spelling of some token
        except ValueError:
            raise InvalidKeyString() from None
        try:
            ok = verify_compact(header, (h64, p64, s64), key.jose_key, self._policy)
        except JoseError:  # a header member of the wrong type (the untrusted ones are refused above)
            raise InvalidKeyString() from None
        if not ok:
            raise BadSignature()
        claims = _json_object(p64)
        self._check_claims(claims, key.kid, now)
        return VerifiedKey(key.kid, key.algorithm.name, parsed.prefix, claims, header)

    def _key_for(self, header: dict[str, Any]) -> VerificationKey:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise UnsupportedAlgorithm()
        if UNTRUSTED_HEADERS & header.keys():
            raise UntrustedHeader()
        if "typ" in header and header["typ"] != "JWT":
            raise InvalidClaims("unexpected typ")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise MissingKeyId()
        key = self.keys.get(kid) if len(kid) <= 128 else None
        if key is None:
            raise UnknownKeyId()
        # The key's own alg wins: a token cannot pick another algorithm for it.
        if key.algorithm.name != alg:
            raise UnsupportedAlgorithm()
        return key

    def _check_claims(self, claims: dict[str, Any], kid: str, now: float) -> None:
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise InvalidClaims("wrong issuer")
        if self.audience is not None:
            aud = claims.get("aud")
            ok = aud == self.audience or (isinstance(aud, list) and self.audience in aud)
            if not ok:
                raise InvalidClaims("wrong audience")
        if self.require_jti_is_kid and claims.get("jti") != kid:
            raise InvalidClaims("jti does not match the key id")
        check_numeric_dates(claims, InvalidClaims)
        if "exp" in claims and now >= claims["exp"] + self.leeway:
            raise ExpiredToken()
        if "nbf" in claims and now + self.future_leeway < claims["nbf"]:
            raise NotYetValid()
        if "iat" in claims and now + self.future_leeway < claims["iat"]:
            raise NotYetValid("issued in the future")
        scope = claims.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidClaims("scope is not a string")
