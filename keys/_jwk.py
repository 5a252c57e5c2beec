"""Public JWKs: export, RFC 7638 thumbprint, stripping, loading.

Only public members ever leave this module. ``public_only`` is the one
function every JWK passes through before it is stored or served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._algorithms import Algorithm, PublicKey, get_algorithm
from ._b64 import b64url_decode_strict, b64url_encode
from .errors import KeyCoreError, UnsupportedAlgorithm

__all__ = [
    "VerificationKey",
    "public_jwk",
    "public_only",
    "thumbprint",
    "load_public_jwk",
    "sentinel_jwk",
]

# RFC 7638 §3.2: the required members, per key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
# Members a served JWK may carry; anything else (d, p, q, dp, dq, qi, oth, k,
# x5c, ...) is dropped.
_PUBLIC_MEMBERS = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
_META_MEMBERS = ("kid", "alg", "use")


def _int_b64(n: int) -> str:
    return b64url_encode(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: our key id."""
    try:
        members = _THUMBPRINT_MEMBERS[jwk["kty"]]
        canonical = {m: jwk[m] for m in members}
    except (KeyError, TypeError):
        raise KeyCoreError("JWK lacks the members its key type requires") from None
    data = json.dumps(canonical, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(data.encode("utf-8")).digest())


def public_only(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``jwk`` with nothing but public key members and kid/alg/use."""
    kty = jwk.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        raise KeyCoreError(f"unsupported key type {kty!r}")
    out = {m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk}
    out.update({m: jwk[m] for m in _META_MEMBERS if m in jwk})
    return out


def public_jwk(public_key: PublicKey, alg: Algorithm) -> dict[str, Any]:
    """The JWK we publish for ``public_key``: key members, kid (thumbprint), alg, use."""
    if isinstance(public_key, rsa.RSAPublicKey):
        nums = public_key.public_numbers()
        jwk: dict[str, Any] = {"kty": "RSA", "n": _int_b64(nums.n), "e": _int_b64(nums.e)}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        nums = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8
        jwk = {
            "kty": "EC",
            "crv": alg.crv,
            "x": b64url_encode(nums.x.to_bytes(size, "big")),
            "y": b64url_encode(nums.y.to_bytes(size, "big")),
        }
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives import serialization

        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    else:
        raise KeyCoreError("not a supported public key")
    if jwk["kty"] != alg.kty:
        raise KeyCoreError(f"a {jwk['kty']} key cannot be used with {alg.name}")
    jwk["kid"] = thumbprint(jwk)
    jwk["alg"] = alg.name
    jwk["use"] = "sig"
    return jwk


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A parsed public key bound to exactly one algorithm (by its JWK ``alg``)."""

    kid: str
    algorithm: Algorithm
    public_key: PublicKey

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, alg={self.algorithm.name!r})"


def _b64_int(value: Any, size: int | None = None) -> int:
    """One spelling per key, hence one kid: RSA n and e (RFC 7518 §6.3.1) use
    the shortest big-endian encoding; EC coordinates (§6.2.1.2) exactly ``size``
    bytes."""
    if not isinstance(value, str):
        raise ValueError("expected a base64url string")
    raw = b64url_decode_strict(value)
    if size is not None and len(raw) != size:
        raise ValueError("EC coordinate of the wrong length")
    if size is None and (not raw or (len(raw) > 1 and raw[0] == 0)):
        raise ValueError("not the shortest encoding of an integer")
    return int.from_bytes(raw, "big")


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
        if alg.kty == "RSA":
            n, e = _b64_int(jwk["n"]), _b64_int(jwk["e"])
            if n.bit_length() < alg.min_rsa_bits:
                raise KeyCoreError("RSA key too small")
            public_key: PublicKey = rsa.RSAPublicNumbers(e, n).public_key()
        elif alg.kty == "EC":
            curve = {"P-256": ec.SECP256R1()}[alg.crv]  # type: ignore[index]
            public_key = ec.EllipticCurvePublicNumbers(
                _b64_int(jwk["x"], 32), _b64_int(jwk["y"], 32), curve
            ).public_key()
        else:
            x = b64url_decode_strict(jwk["x"])
            public_key = ed25519.Ed25519PublicKey.from_public_bytes(x)
    except KeyCoreError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyCoreError(f"JWK is not a valid {alg.kty} public key") from exc
    if thumbprint(jwk) != kid:
        raise KeyCoreError("JWK kid is not its RFC 7638 thumbprint")
    return VerificationKey(kid=kid, algorithm=alg, public_key=public_key)


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
