"""The JWKS document, kept as pre-serialized JWKs.

Each JWK is serialized once, when added. Rendering joins bytes and hashes
them for a strong ETag; it is cached until the next change, so a change costs
one join, not a re-serialization of every key. Keys are served sorted by kid,
so the bytes and the ETag depend only on the set of keys: a restarted process
or another replica serving the same set answers the same ETag. With no keys, the sentinel is
published, because gateways treat an empty set as a failed fetch.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ._jwk import public_only

__all__ = ["JWKSDocument", "RenderedJWKS"]


@dataclass(frozen=True, slots=True)
class RenderedJWKS:
    body: bytes
    etag: str  # strong, quoted: "..."
    key_count: int  # keys served, sentinel included


def _serialize(jwk: Mapping[str, Any]) -> bytes:
    return json.dumps(public_only(jwk), separators=(",", ":")).encode("ascii")


class JWKSDocument:
    """``sentinel`` is required: an empty set would make gateways keep their
    old one forever (see keys.sentinel_jwk)."""

    def __init__(self, sentinel: Mapping[str, Any]) -> None:
        self._parts: dict[str, bytes] = {}  # kept sorted by kid at render time
        self._unsorted = False
        self._sentinel = _serialize(sentinel)
        self._rendered: RenderedJWKS | None = None

    def add(self, jwk: Mapping[str, Any]) -> None:
        kid = jwk.get("kid")
        if not isinstance(kid, str) or "alg" not in jwk:
            raise ValueError("every published JWK needs kid and alg")
        part = _serialize(jwk)
        if kid not in self._parts and self._parts and kid < next(reversed(self._parts)):
            self._unsorted = True
        self._parts[kid] = part
        self._rendered = None

    def remove(self, kid: str) -> bool:
        if self._parts.pop(kid, None) is None:
            return False
        self._rendered = None
        return True

    def __contains__(self, kid: object) -> bool:
        return kid in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def kids(self) -> Iterator[str]:
        return iter(self._parts)

    def render(self) -> RenderedJWKS:
        if self._rendered is None:
            if self._unsorted:
                # dicts keep insertion order; a nearly sorted one re-sorts in linear time
                self._parts = dict(sorted(self._parts.items()))
                self._unsorted = False
            parts = list(self._parts.values())
            if not parts:
                parts = [self._sentinel]
            body = b'{"keys":[' + b",".join(parts) + b"]}"
            digest = hashlib.sha256(body).digest()[:18]
            etag = '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'
            self._rendered = RenderedJWKS(body, etag, len(parts))
        return self._rendered
