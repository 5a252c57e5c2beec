"""Fixtures for the keys/ core tests.

RSA-2048 generation costs ~35 ms, so keypairs and minted keys are made once
per session and shared; tests never mutate them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from keys_support import AUDIENCE, ISSUER, NOW, Signer

import keys


@pytest.fixture(scope="session")
def rs_signer() -> Signer:
    return Signer.generate("RS256")


@pytest.fixture(scope="session")
def es_signer() -> Signer:
    return Signer.generate("ES256")


@pytest.fixture(scope="session")
def ed_signer() -> Signer:
    return Signer.generate("EdDSA")


@pytest.fixture(scope="session")
def good() -> keys.MintedKey:
    """One RS256 key minted by keys.mint at NOW: the base of the tamper corpus."""
    return keys.mint(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "cus_1", "scope": "read write"},
        algorithm="RS256",
        prefix="sk_live_",
        clock=lambda: NOW,
    )


@pytest.fixture(scope="session")
def keyset(good, rs_signer, es_signer, ed_signer) -> keys.PublicKeySet:
    return keys.PublicKeySet([good.public_jwk, rs_signer.jwk, es_signer.jwk, ed_signer.jwk])


@pytest.fixture
def make_verifier(keyset) -> Callable[..., keys.Verifier]:
    """Verifier over the shared key set, pinned to RS256, clock fixed at NOW."""

    def make(**overrides: Any) -> keys.Verifier:
        options: dict[str, Any] = {
            "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ("RS256",), "clock": lambda: NOW,
        }
        options.update(overrides)
        return keys.Verifier(options.pop("keys", keyset), **options)

    return make
