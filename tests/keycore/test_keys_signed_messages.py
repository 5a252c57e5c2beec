"""keys.P256PublicKey: ECDSA P-256 / SHA-256 over raw bytes, as GitHub's
secret-scanning partner program signs its reports."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import keys

# GitHub's documented test vector (the partner-program docs: a test key, its
# payload of 83 bytes and the signature GitHub's example request carries)
GITHUB_TEST_KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEsz9ugWDj5jK5ELBK42ynytbo38gP
HzZFI03Exwz8Lh/tCfL3YxwMdLjB+bMznsanlhK0RwcGP3IDb34kQDIo3Q==
-----END PUBLIC KEY-----"""
GITHUB_PAYLOAD = b'[{"token":"some_token","type":"some_type","url":"some_url","source":"some_source"}]'
GITHUB_SIGNATURE = "MEUCIFLZzeK++IhS+y276SRk2Pe5LfDrfvTXu6iwKKcFGCrvAiEAhHN2kDOhy2I6eGkOFmxNkOJ+L2y8oQ9A2T9GGJo6WJY="


def _pem(public) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_githubs_documented_vector_verifies():
    key = keys.P256PublicKey.from_pem(GITHUB_TEST_KEY)
    assert len(GITHUB_PAYLOAD) == 83
    assert key.verify(GITHUB_PAYLOAD, GITHUB_SIGNATURE)
    assert not key.verify(GITHUB_PAYLOAD + b"\n", GITHUB_SIGNATURE)  # the raw body, byte for byte
    assert not key.verify(GITHUB_PAYLOAD.replace(b"some_url", b"some_uri"), GITHUB_SIGNATURE)


def test_a_fresh_key_pair_round_trips_and_malformed_signatures_are_false():
    private = ec.generate_private_key(ec.SECP256R1())
    key = keys.P256PublicKey.from_pem(_pem(private.public_key()))
    sig = base64.b64encode(private.sign(b"body", ec.ECDSA(hashes.SHA256()))).decode()
    assert key.verify(b"body", sig)
    other = base64.b64encode(ec.generate_private_key(ec.SECP256R1()).sign(b"body", ec.ECDSA(hashes.SHA256())))
    urlsafe = sig.translate(str.maketrans("+/", "-_"))  # base64url is not GitHub's encoding
    for bad in ("", "!!!!", sig[:-4], sig + "AAAA", "A" * 500, other.decode(), sig + "\n",
                *([urlsafe] if urlsafe != sig else [])):
        assert not key.verify(b"body", bad), bad


@pytest.mark.parametrize("public", [
    ec.generate_private_key(ec.SECP384R1()).public_key(),
    ed25519.Ed25519PrivateKey.generate().public_key(),
])
def test_only_p256_public_keys_load(public):
    with pytest.raises(ValueError):
        keys.P256PublicKey.from_pem(_pem(public))


@pytest.mark.parametrize("text", ["", "not a pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                                  "é" * 10, "x" * 10_000])
def test_garbage_pem_is_a_value_error(text):
    with pytest.raises(ValueError):
        keys.P256PublicKey.from_pem(text)
