"""The JWS layer, delegated to joserfc: one registry, compact sign and verify.

Ours is only the policy: which algorithms (by our published names), and a
header registry that refuses every parameter pointing elsewhere for keys or
demanding extensions. Unknown other members stay allowed, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from joserfc import jws
from joserfc.registry import HeaderParameter, HeaderRegistryDict

from ._algorithms import Algorithm, JoseKey

__all__ = ["UNTRUSTED_HEADERS", "JWSPolicy", "sign_compact", "verify_compact"]

UNTRUSTED_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
_REFUSED: HeaderRegistryDict = {name: HeaderParameter(f"{name} (never trusted)", "none") for name in UNTRUSTED_HEADERS}


class JWSPolicy(jws.JWSRegistry):
    def __init__(self, algorithms: Iterable[Algorithm]) -> None:
        by_name = {alg.name: alg.jws for alg in algorithms}
        self.names = tuple(by_name)
        super().__init__(header_registry=_REFUSED, algorithms=self.names, strict_check_header=False)
        # our names (EdDSA) onto joserfc's models (Ed25519), per instance
        self.algorithms = by_name


def sign_compact(header: dict[str, str], payload: bytes, key: JoseKey, registry: JWSPolicy) -> str:
    """``BASE64URL(header).BASE64URL(payload).BASE64URL(signature)``."""
    return jws.serialize_compact(header, payload, key, algorithms=registry.names, registry=registry)


def verify_compact(
    header: dict[str, object], segments: tuple[str, str, str], key: JoseKey, registry: JWSPolicy
) -> bool:
    """Check the signature over already-parsed, already-strict segments.

    Raises JoseError if the header breaks the registry's rules.
    """
    obj = jws.CompactSignature(header, b"")  # the payload is read from its segment
    h64, p64, s64 = segments
    obj.segments.update({"header": h64.encode("ascii"), "payload": p64.encode("ascii"),
                         "signature": s64.encode("ascii")})
    return jws.validate_compact(obj, key, algorithms=registry.names, registry=registry)
