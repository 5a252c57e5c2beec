"""Signing algorithms as registered data.

Each entry knows how to make a keypair, sign once, verify, and which JWK shape
its public key has. Adding an algorithm (PS384, RSA-3072 under its own name...)
is one ``register()`` call; nothing else in the package switches on names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import UnsupportedAlgorithm

__all__ = ["Algorithm", "ALGORITHMS", "DEFAULT_ALGORITHM", "get_algorithm", "register"]

PrivateKey = Any  # rsa/ec/ed25519 private key from cryptography
PublicKey = Any


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str  # the JWS "alg" value
    kty: str  # JWK key type of its public key
    crv: str | None  # JWK curve, for EC and OKP
    generate: Callable[[], PrivateKey]
    sign: Callable[[PrivateKey, bytes], bytes]
    # raises cryptography.exceptions.InvalidSignature (or ValueError) on mismatch
    verify: Callable[[PublicKey, bytes, bytes], None]
    public_key_type: type
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


# --- RSA -------------------------------------------------------------------

def _rsa_generator(bits: int) -> Callable[[], rsa.RSAPrivateKey]:
    return lambda: rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _pkcs1(hash_: hashes.HashAlgorithm):
    def sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
        return key.sign(data, padding.PKCS1v15(), hash_)

    def verify(key: rsa.RSAPublicKey, data: bytes, sig: bytes) -> None:
        key.verify(sig, data, padding.PKCS1v15(), hash_)

    return sign, verify


def _pss(hash_: hashes.HashAlgorithm):
    def pad() -> padding.PSS:
        return padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)

    def sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
        return key.sign(data, pad(), hash_)

    def verify(key: rsa.RSAPublicKey, data: bytes, sig: bytes) -> None:
        key.verify(sig, data, pad(), hash_)

    return sign, verify


# --- ECDSA: JWS wants raw r||s, cryptography speaks DER ---------------------

def _ecdsa(curve: ec.EllipticCurve, hash_: hashes.HashAlgorithm, size: int):
    def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def verify(key: ec.EllipticCurvePublicKey, data: bytes, sig: bytes) -> None:
        if len(sig) != 2 * size:
            raise InvalidSignature("wrong ECDSA signature length")
        r = int.from_bytes(sig[:size], "big")
        s = int.from_bytes(sig[size:], "big")
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_))

    return sign, verify


def _ed25519_sign(key: ed25519.Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def _ed25519_verify(key: ed25519.Ed25519PublicKey, data: bytes, sig: bytes) -> None:
    key.verify(sig, data)


_rs256_sign, _rs256_verify = _pkcs1(hashes.SHA256())
_ps256_sign, _ps256_verify = _pss(hashes.SHA256())
_es256_sign, _es256_verify = _ecdsa(ec.SECP256R1(), hashes.SHA256(), 32)

register(Algorithm(
    "RS256", "RSA", None, _rsa_generator(2048), _rs256_sign, _rs256_verify,
    rsa.RSAPublicKey, min_rsa_bits=2048, approx_jwk_bytes=430,
))
register(Algorithm(
    "PS256", "RSA", None, _rsa_generator(2048), _ps256_sign, _ps256_verify,
    rsa.RSAPublicKey, min_rsa_bits=2048, approx_jwk_bytes=430,
))
register(Algorithm(
    "ES256", "EC", "P-256", lambda: ec.generate_private_key(ec.SECP256R1()),
    _es256_sign, _es256_verify, ec.EllipticCurvePublicKey, approx_jwk_bytes=180,
))
# Gateways (Envoy 1.40) know Ed25519 under the JWS name "EdDSA".
register(Algorithm(
    "EdDSA", "OKP", "Ed25519", ed25519.Ed25519PrivateKey.generate,
    _ed25519_sign, _ed25519_verify, ed25519.Ed25519PublicKey, approx_jwk_bytes=140,
))
