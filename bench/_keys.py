"""Key sets for the benchmarks.

Latency and propagation use real minted keys. Large sets for memory may be
synthetic, and the output says so: RSA moduli are random odd 2048-bit numbers
(the gateway parses them exactly like real ones); EC and Ed25519 keys are real
keys (cheap to make) whose private halves are dropped at once.
"""

from __future__ import annotations

import base64
import json
import secrets

import keys
from keys import public_jwk


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def synthetic_jwk(alg: str) -> dict:
    if alg in ("RS256", "PS256"):
        n = secrets.randbits(2048) | 1 | (1 << 2047)
        jwk = {"kty": "RSA", "n": _b64(n.to_bytes(256, "big")), "e": "AQAB"}
        jwk.update(kid=keys.thumbprint(jwk), alg=alg, use="sig")
        return jwk
    algorithm = keys.get_algorithm(alg)
    return public_jwk(algorithm.generate().public_key(), algorithm)


def serialized(jwk: dict) -> bytes:
    return json.dumps(keys.public_only(jwk), separators=(",", ":")).encode()


def jwks_body(parts: list[bytes]) -> bytes:
    return b'{"keys":[' + b",".join(parts) + b"]}"


def bytes_per_key(alg: str, sample: int = 64) -> float:
    return sum(len(serialized(synthetic_jwk(alg))) + 1 for _ in range(sample)) / sample


ENVOY_CAP = 32 * 1024 * 1024  # Envoy's async HTTP client buffer (kBufferLimitForResponse)


def fits(alg: str, count: int, per_key: float) -> bool:
    return count * per_key + 64 < ENVOY_CAP * 0.95
