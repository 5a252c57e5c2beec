"""Mint-and-burn: a fresh keypair per API key, used for one signature.

The private key lives only in locals of ``_sign_once`` (the raw key and its
joserfc wrapper) and is gone when it returns: it is not stored on any object,
cached, logged or returned. What comes back holds only public data and the key
string itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from ._algorithms import DEFAULT_ALGORITHM, Algorithm, PrivateKey, get_algorithm
from ._claims import check_numeric_dates
from ._jose import JWSPolicy, sign_compact
from ._jwk import bind_public, published_jwk, signing_key
from .keystring import format_key_string, validate_prefix

__all__ = ["MintedKey", "mint", "mint_with_keypair"]

# Claims the core sets itself; a caller that passes them gets a ValueError
# rather than a silently different key.
_RESERVED = frozenset({"jti"})


@dataclass(frozen=True, slots=True)
class MintedKey:
    """The result of one mint. ``key`` is the secret: show it once."""

    key: str
    kid: str
    public_jwk: dict[str, Any]
    claims: dict[str, Any]

    @property
    def prefix(self) -> str:
        return self.key[: self.key.find("eyJ")]

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"MintedKey(kid={self.kid!r}, key=<redacted>)"


def _json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@cache
def _policy(alg: Algorithm) -> JWSPolicy:
    return JWSPolicy([alg])


def _sign_once(
    private_key: PrivateKey, alg: Algorithm, claims: Mapping[str, Any], prefix: str, now: float
) -> MintedKey:
    public = bind_public(private_key.public_key(), alg)
    jwk = published_jwk(public, alg)
    kid = jwk["kid"]
    payload = {k: v for k, v in claims.items() if v is not None}
    payload.setdefault("sub", kid)
    payload.setdefault("iat", int(now))
    payload["jti"] = kid
    check_numeric_dates(payload, ValueError)  # never mint what our verifier refuses
    header = {"alg": alg.name, "kid": kid, "typ": "JWT"}
    signer = signing_key(private_key, public, alg)
    jwt = sign_compact(header, _json(payload), signer, _policy(alg))
    del signer, private_key
    return MintedKey(format_key_string(prefix, jwt), kid, jwk, payload)


def _check(claims: Mapping[str, Any], prefix: str) -> None:
    validate_prefix(prefix)
    clash = _RESERVED & set(claims)
    if clash:
        raise ValueError(f"claims {sorted(clash)} are set by mint itself")


def mint(
    claims: Mapping[str, Any],
    *,
    algorithm: str = DEFAULT_ALGORITHM,
    prefix: str = "sk_live_",
    clock: Callable[[], float] = time.time,
) -> MintedKey:
    """Generate a keypair, sign ``claims`` once, forget the private key.

    ``jti`` is set to the key id; ``sub`` defaults to it; ``iat`` to now.
    ``exp``/``nbf``/``iat`` must be integers (NumericDate, year 0..9999).
    CPU-bound (RSA-2048 generation takes ~35 ms): call it off the event loop.
    """
    _check(claims, prefix)
    alg = get_algorithm(algorithm)
    return _sign_once(alg.generate(), alg, claims, prefix, clock())


def mint_with_keypair(
    take_private_key: Callable[[], PrivateKey],
    claims: Mapping[str, Any],
    *,
    algorithm: str = DEFAULT_ALGORITHM,
    prefix: str = "sk_live_",
    clock: Callable[[], float] = time.time,
) -> MintedKey:
    """Like :func:`mint` with a keypair from elsewhere (a pre-generated pool).

    ``take_private_key`` must hand over its only reference, so the key is
    burnt here exactly as a freshly generated one would be.
    """
    _check(claims, prefix)
    alg = get_algorithm(algorithm)
    return _sign_once(take_private_key(), alg, claims, prefix, clock())
