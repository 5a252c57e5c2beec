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
import bisect
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._jwk import public_only

__all__ = ["JWKSDocument", "RenderedJWKS", "serialize_jwk"]


@dataclass(frozen=True, slots=True)
class RenderedJWKS:
    body: bytes
    etag: str  # strong, quoted: "..."
    key_count: int  # keys served, sentinel included


def _serialize(jwk: Mapping[str, Any]) -> bytes:
    return json.dumps(public_only(jwk), separators=(",", ":")).encode("ascii")


def serialize_jwk(jwk: Mapping[str, Any]) -> bytes:
    """A published JWK as the document holds it (public members, compact):
    callers that keep per-key bytes share this object with the document
    (``JWKSDocument.add_serialized``) instead of a second copy."""
    if not isinstance(jwk.get("kid"), str) or "alg" not in jwk:
        raise ValueError("every published JWK needs kid and alg")
    return _serialize(jwk)


class JWKSDocument:
    """``sentinel`` is required: an empty set would make gateways keep their
    old one forever (see keys.sentinel_jwk)."""

    def __init__(self, sentinel: Mapping[str, Any]) -> None:
        self._parts: dict[str, bytes] = {}
        # sorted as of the last render, side by side: kids and their bytes
        self._order: list[str] = []
        self._bodies: list[bytes] = []
        self._added: list[str] = []  # kids added since, in any order
        self._sentinel = _serialize(sentinel)
        self._rendered: RenderedJWKS | None = None

    def add(self, jwk: Mapping[str, Any]) -> None:
        part = serialize_jwk(jwk)  # checks kid and alg first
        self.add_serialized(jwk["kid"], part)

    def add_serialized(self, kid: str, part: bytes) -> None:
        """Add (or replace) a key by its ``serialize_jwk`` bytes."""
        i = self._index(kid)
        if i is not None:
            self._bodies[i] = part
        elif kid not in self._parts:
            self._added.append(kid)
        self._parts[kid] = part
        self._rendered = None

    def remove(self, kid: str) -> bool:
        if self._parts.pop(kid, None) is None:
            return False
        i = self._index(kid)
        if i is not None:
            del self._order[i], self._bodies[i]
        else:
            self._added.remove(kid)
        self._rendered = None
        return True

    def _index(self, kid: str) -> int | None:
        i = bisect.bisect_left(self._order, kid)
        return i if i < len(self._order) and self._order[i] == kid else None

    def __contains__(self, kid: object) -> bool:
        return kid in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def kids(self) -> Iterator[str]:
        return iter(self._parts)

    def render(self) -> RenderedJWKS:
        if self._rendered is None:
            if self._added:
                self._merge_added()
            parts = list(self._bodies) or [self._sentinel]
            parts[0] = b'{"keys":[' + parts[0]
            parts[-1] = parts[-1] + b"]}"
            body = b",".join(parts)  # one copy of the whole document
            digest = hashlib.sha256(body).digest()[:18]
            etag = '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'
            self._rendered = RenderedJWKS(body, etag, len(parts))
        return self._rendered

    def _merge_added(self) -> None:
        # a few new kids: binary insertion; many (a bulk load): one sort
        if len(self._added) <= 64:
            for kid in self._added:
                i = bisect.bisect_left(self._order, kid)
                self._order.insert(i, kid)
                self._bodies.insert(i, self._parts[kid])
        else:
            self._order.extend(self._added)
            self._order.sort()
            self._bodies = [self._parts[kid] for kid in self._order]
        self._added.clear()
