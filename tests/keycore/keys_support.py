"""Helpers for the keys/ tests: constants, base64url/JSON codecs and a signer
that is independent of keys/ (it talks to `cryptography` directly).

The signer holds its private key on purpose: the tests need tokens whose
signature is *valid* so that only the rule under test can reject them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import keys

DATA = Path(__file__).parent / "data"

NOW = 1_700_000_000  # fixed clock (Nov 2023): in the past, so other libraries accept iat
ISSUER = "https://auth.example/t/acme"
AUDIENCE = "acme-api"
PREFIX = "sk_live_"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DROP = object()  # claims(x=DROP) / header(x=DROP) removes member x


def load_json(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes:
    """Lenient decode (the stdlib's), for reading our own test data."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def split_key(key: str) -> tuple[str, str, str, str]:
    """``<prefix><h>.<p>.<s>`` -> (prefix, h, p, s)."""
    at = key.index("eyJ")
    h, p, s = key[at:].split(".")
    return key[:at], h, p, s


def decode_segment(segment: str) -> Any:
    return json.loads(unb64(segment))


def flip_s(signature: bytes) -> bytes:
    """The other valid ES256 signature for the same input: (r, n - s)."""
    s = int.from_bytes(signature[32:], "big")
    return signature[:32] + (P256_ORDER - s).to_bytes(32, "big")


def raw_sign(alg: str, private_key: Any, data: bytes) -> bytes:
    """JWS signatures straight from `cryptography`, not via keys/.

    ES256 comes out low-S (s <= n/2), the one spelling our verifier accepts;
    "ES256-high-s" forges the other one."""
    if alg == "RS256":
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return private_key.sign(data, pss, hashes.SHA256())
    if alg in ("ES256", "ES256-high-s"):
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        s = min(s, P256_ORDER - s) if alg == "ES256" else max(s, P256_ORDER - s)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA":
        return private_key.sign(data)
    if alg == "HS256":  # private_key is the shared secret (bytes)
        return hmac.new(private_key, data, hashlib.sha256).digest()
    raise AssertionError(f"test signer does not know {alg}")


_GENERATORS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


def _apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@dataclass
class Signer:
    """A test-held keypair whose public JWK is built by ``keys.public_jwk``."""

    alg: str
    private_key: Any
    jwk: dict[str, Any]

    @classmethod
    def generate(cls, alg: str, private_key: Any = None) -> Signer:
        private_key = private_key if private_key is not None else _GENERATORS[alg]()
        jwk = keys.public_jwk(private_key.public_key(), keys.get_algorithm(alg))
        return cls(alg, private_key, jwk)

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    def header(self, **changes: Any) -> dict[str, Any]:
        return _apply({"alg": self.alg, "kid": self.kid, "typ": "JWT"}, changes)

    def claims(self, **changes: Any) -> dict[str, Any]:
        base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "cus_1", "iat": NOW - 60, "jti": self.kid}
        return _apply(base, changes)

    def jwt(
        self,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        *,
        header_segment: str | None = None,
        payload_segment: str | None = None,
        sign_alg: str | None = None,
    ) -> str:
        h = header_segment if header_segment is not None else b64json(header if header is not None else self.header())
        p = payload_segment if payload_segment is not None else b64json(claims if claims is not None else self.claims())
        sig = raw_sign(sign_alg or self.alg, self.private_key, f"{h}.{p}".encode("ascii"))
        return f"{h}.{p}.{b64(sig)}"

    def key(self, *args: Any, prefix: str = PREFIX, **kwargs: Any) -> str:
        return prefix + self.jwt(*args, **kwargs)
