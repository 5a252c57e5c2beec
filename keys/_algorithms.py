"""Signing algorithms as registered data.

An entry names the JWS "alg" we publish, the JWK shape of its keys, how to make
a keypair, and which joserfc algorithm model signs and verifies with it.
Adding an algorithm (PS384, RSA-3072 under its own name...) is one
``register()`` call; nothing else in the package switches on names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from .errors import UnsupportedAlgorithm

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "Algorithm",
    "JoseKey",
    "get_algorithm",
    "register",
    "supported_algorithms",
]

PrivateKey = Any  # rsa/ec/ed25519 private key from cryptography
PublicKey = Any
JoseKey = RSAKey | ECKey | OKPKey


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str  # the JWS "alg" value we publish and write into headers
    kty: str  # JWK key type of its public key
    crv: str | None  # JWK curve, for EC and OKP
    generate: Callable[[], PrivateKey]
    jws: JWSAlgModel  # joserfc's signer/verifier for it
    key_type: type[JoseKey]  # joserfc key class for its JWKs
    public_key_type: type[Any]
    min_rsa_bits: int = 0  # refuse weaker RSA keys when loading a JWK
    approx_jwk_bytes: int = 0  # serialized public JWK, for capacity planning


ALGORITHMS: dict[str, Algorithm] = {}
DEFAULT_ALGORITHM = "RS256"


def register(alg: Algorithm) -> Algorithm:
    ALGORITHMS[alg.name] = alg
    return alg


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise UnsupportedAlgorithm(f"algorithm {name!r} is not supported") from None


def supported_algorithms() -> tuple[str, ...]:
    """The registered algorithm names, sorted (read-only)."""
    return tuple(sorted(ALGORITHMS))


class LowSECDSA(JWSAlgModel):
    """joserfc's ECDSA with one spelling per signature.

    (r, s) and (r, n - s) both verify; a verifier that takes both lets anyone
    turn one token into two. We write s <= n/2 and accept nothing else.
    """

    key_type = "EC"

    def __init__(self, inner: JWSAlgModel, order: int, size: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = f"{inner.description}, low-S only"
        self.order = order
        self.size = size

    def check_key(self, key: Any) -> None:
        self.inner.check_key(key)

    def sign(self, msg: bytes, key: Any) -> bytes:
        sig = self.inner.sign(msg, key)
        s = int.from_bytes(sig[self.size:], "big")
        if s > self.order // 2:
            sig = sig[: self.size] + (self.order - s).to_bytes(self.size, "big")
        return sig

    def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:
        if len(sig) != 2 * self.size or int.from_bytes(sig[self.size:], "big") > self.order // 2:
            return False
        return bool(self.inner.verify(msg, sig, key))


# joserfc's own models (``Ed25519`` is its name for what gateways call EdDSA;
# its ``EdDSA`` entry warns as deprecated, so we never ask for it by name).
_JOSE = JWSRegistry.algorithms
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _rsa_2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


register(Algorithm(
    "RS256", "RSA", None, _rsa_2048, _JOSE["RS256"], RSAKey, rsa.RSAPublicKey,
    min_rsa_bits=2048, approx_jwk_bytes=430,
))
register(Algorithm(
    "PS256", "RSA", None, _rsa_2048, _JOSE["PS256"], RSAKey, rsa.RSAPublicKey,
    min_rsa_bits=2048, approx_jwk_bytes=430,
))
register(Algorithm(
    "ES256", "EC", "P-256", _p256, LowSECDSA(_JOSE["ES256"], _P256_ORDER, 32), ECKey,
    ec.EllipticCurvePublicKey, approx_jwk_bytes=180,
))
# Gateways (Envoy 1.40) know Ed25519 under the JWS name "EdDSA".
register(Algorithm(
    "EdDSA", "OKP", "Ed25519", ed25519.Ed25519PrivateKey.generate, _JOSE["Ed25519"], OKPKey,
    ed25519.Ed25519PublicKey, approx_jwk_bytes=140,
))

