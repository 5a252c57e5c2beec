"""Public JWKs: export, RFC 7638 thumbprint, stripping, loading (via joserfc).

Only public members ever leave this module. ``public_only`` is the one
function every JWK passes through before it is stored or served. What is ours:
one spelling per key (shortest RSA integers, fixed-length EC coordinates,
canonical base64url), kid = thumbprint, alg required and bound to the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import thumbprint as _jose_thumbprint
from joserfc.util import urlsafe_b64decode

from ._algorithms import Algorithm, JoseKey, PrivateKey, PublicKey, get_algorithm
from .errors import KeyCoreError, UnsupportedAlgorithm

__all__ = [
    "VerificationKey",
    "public_jwk",
    "public_only",
    "thumbprint",
    "load_public_jwk",
    "sentinel_jwk",
]

# RFC 7638 §3.2: the required members, per key type.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
# Members a served JWK may carry, in the order we publish them; anything else
# (d, p, q, dp, dq, qi, oth, k, x5c, ...) is dropped.
_PUBLIC_MEMBERS = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
_META_MEMBERS = ("kid", "alg", "use")
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {"P-256": (ec.SECP256R1(), 32)}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: our key id."""
    try:
        members = _THUMBPRINT_MEMBERS[jwk["kty"]]
        canonical = {m: jwk[m] for m in members}
    except (KeyError, TypeError):
        raise KeyCoreError("JWK lacks the members its key type requires") from None
    if not all(isinstance(v, str) for v in canonical.values()):
        raise KeyCoreError("JWK members must be strings")
    return _jose_thumbprint(canonical)


def public_only(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``jwk`` with nothing but public key members and kid/alg/use."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _PUBLIC_MEMBERS:
        raise KeyCoreError(f"unsupported key type {kty!r}")
    out = {m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk}
    out.update({m: jwk[m] for m in _META_MEMBERS if m in jwk})
    return out


def published_jwk(key: JoseKey, alg: Algorithm) -> dict[str, Any]:
    members = key.dict_value
    jwk: dict[str, Any] = {m: members[m] for m in _PUBLIC_MEMBERS[alg.kty]}
    jwk["kid"] = key.thumbprint()
    jwk["alg"] = alg.name
    jwk["use"] = "sig"
    return jwk


def bind_public(public_key: PublicKey, alg: Algorithm) -> JoseKey:
    if not isinstance(public_key, alg.public_key_type):
        raise KeyCoreError(f"not a public key for {alg.name}")
    key = alg.key_type(public_key, public_key)  # what import_key does, minus its RSA size warning
    if alg.crv is not None and key.dict_value.get("crv") != alg.crv:
        raise KeyCoreError(f"a key on another curve cannot be used with {alg.name}")
    return key


def signing_key(private_key: PrivateKey, public: JoseKey, alg: Algorithm) -> JoseKey:
    """joserfc's wrapper for one signature. Its JWK view is the public members
    only, so the private numbers are never exported into a dict (and never
    computed: for RSA that export costs more than the signature)."""
    return alg.key_type(private_key, dict(public.dict_value))


def public_jwk(public_key: PublicKey, alg: Algorithm) -> dict[str, Any]:
    """The JWK we publish for ``public_key``: key members, kid (thumbprint), alg, use."""
    return published_jwk(bind_public(public_key, alg), alg)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A parsed public key bound to exactly one algorithm (by its JWK ``alg``)."""

    kid: str
    algorithm: Algorithm
    jose_key: JoseKey  # parsed once: importing a JWK costs far more than a lookup

    @property
    def public_key(self) -> PublicKey:
        return self.jose_key.public_key

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, alg={self.algorithm.name!r})"


def _canonical_int(value: Any, size: int | None = None) -> int:
    """One spelling per key, hence one kid: RSA n and e (RFC 7518 §6.3.1) use
    the shortest big-endian encoding; EC coordinates (§6.2.1.2) exactly ``size``
    bytes."""
    return int.from_bytes(_canonical_bytes(value, size), "big")


def _canonical_bytes(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected a base64url string")
    raw = urlsafe_b64decode(value.encode("ascii"))
    if size is not None and len(raw) != size:
        raise ValueError("EC coordinate of the wrong length")
    if size is None and (not raw or (len(raw) > 1 and raw[0] == 0)):
        raise ValueError("not the shortest encoding of an integer")
    return raw


def _native_public_key(jwk: Mapping[str, Any], alg: Algorithm) -> PublicKey:
    """The key from its strictly checked members. Built here rather than by
    joserfc's dict import, which re-decodes every integer and costs ~8x more
    (a key cache loads every published key)."""
    if alg.kty == "RSA":
        n, e = _canonical_int(jwk["n"]), _canonical_int(jwk["e"])
        if n.bit_length() < alg.min_rsa_bits:
            raise KeyCoreError("RSA key too small")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if alg.kty == "EC":
        curve, size = _EC_CURVES[jwk["crv"]]
        x, y = _canonical_int(jwk["x"], size), _canonical_int(jwk["y"], size)
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if jwk["crv"] != "Ed25519":
        raise ValueError("unsupported OKP curve")
    return ed25519.Ed25519PublicKey.from_public_bytes(_canonical_bytes(jwk["x"], 32))


def load_public_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """Parse a published JWK. ``kid`` and ``alg`` are required; the kid must be
    the key's thumbprint, so a JWK cannot claim another key's id."""
    kid, alg_name = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not kid:
        raise KeyCoreError("JWK has no kid")
    if not isinstance(alg_name, str):
        raise UnsupportedAlgorithm("JWK has no alg")
    alg = get_algorithm(alg_name)
    if jwk.get("kty") != alg.kty or (alg.crv is not None and jwk.get("crv") != alg.crv):
        raise KeyCoreError(f"JWK key type does not match {alg.name}")
    try:
        native = _native_public_key(jwk, alg)
        # only the key members: a stray "d" must not make this a private key
        key = alg.key_type(native, {m: jwk[m] for m in _PUBLIC_MEMBERS[alg.kty]})
    except KeyCoreError:
        raise
    except (KeyError, ValueError, TypeError, UnicodeError, JoseError) as exc:
        raise KeyCoreError(f"JWK is not a valid {alg.kty} public key") from exc
    if thumbprint(jwk) != kid:
        raise KeyCoreError("JWK kid is not its RFC 7638 thumbprint")
    return VerificationKey(kid=kid, algorithm=alg, jose_key=key)


def sentinel_jwk(algorithm: str = "EdDSA") -> dict[str, Any]:
    """A valid public JWK whose private half was never kept by anyone.

    Gateways treat an empty JWKS as a failed fetch and keep the old set, so a
    JWKS must never be empty; this key fills it and can verify nothing.
    """
    alg = get_algorithm(algorithm)
    private = alg.generate()
    jwk = public_jwk(private.public_key(), alg)
    del private
    return jwk
