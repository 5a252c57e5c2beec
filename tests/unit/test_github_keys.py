"""services.leaks.GitHubKeys: GitHub's secret-scanning keys, cached, refetched
for an unknown identifier at most once per interval, never trusted half-read."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authserver.errors import Unavailable
from authserver.services.leaks import GitHubKeys


def _pem(curve: ec.EllipticCurve) -> str:
    return ec.generate_private_key(curve).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Source:
    def __init__(self) -> None:
        self.entries = [{"key_identifier": "one", "key": _pem(ec.SECP256R1()), "is_current": True}]
        self.calls = 0
        self.fail = False

    async def __call__(self, url: str) -> bytes:
        self.calls += 1
        if self.fail:
            raise OSError("unreachable")
        return json.dumps({"public_keys": self.entries}).encode()


async def test_cached_refetched_for_new_ids_at_most_once_per_interval():
    now = [1000.0]
    src = Source()
    gk = GitHubKeys("x", fetch=src, clock=lambda: now[0], refetch_interval=60)
    assert await gk.get("one") is not None and src.calls == 1
    assert await gk.get("one") is not None and src.calls == 1
    assert await gk.get("two") is None and src.calls == 1  # within the minute: no fetch
    src.entries.append({"key_identifier": "two", "key": _pem(ec.SECP256R1()), "is_current": True})
    now[0] += 60
    assert await gk.get("two") is not None and src.calls == 2
    assert await gk.get("") is None and await gk.get("x" * 1000) is None and src.calls == 2


async def test_keys_that_are_not_p256_are_skipped_and_a_failed_fetch_is_503_once_per_interval():
    now = [0.0]
    src = Source()
    src.entries += [{"key_identifier": "p384", "key": _pem(ec.SECP384R1())},
                    {"key_identifier": "junk", "key": "not a key"}]
    gk = GitHubKeys("x", fetch=src, clock=lambda: now[0], refetch_interval=60)
    assert await gk.get("p384") is None and await gk.get("junk") is None
    assert await gk.get("one") is not None
    src.fail = True
    now[0] += 61
    with pytest.raises(Unavailable):
        await gk.get("new")
    assert await gk.get("new") is None and src.calls == 2  # no retry storm
    assert await gk.get("one") is not None  # the cached keys still serve


@pytest.mark.parametrize("body", [b"", b"{}", b'{"public_keys": "x"}', b"[1]", b"\xff"])
async def test_a_malformed_key_document_is_unavailable(body):
    async def fetch(url: str) -> bytes:
        return body

    with pytest.raises(Unavailable):
        await GitHubKeys("x", fetch=fetch).get("one")
