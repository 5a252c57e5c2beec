"""load_public_jwk: what a published JWK must be before we verify with it."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from keys_support import B64URL_ALPHABET, load_json, unb64

import keys

RFC7638 = load_json("thumbprints.json")["vectors"][0]
RSA_JWK = {**RFC7638["jwk"], "kid": RFC7638["thumbprint"]}  # 2048-bit RSA, alg RS256


@pytest.fixture(scope="module")
def ec_jwk():
    return keys.public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), keys.get_algorithm("ES256"))


@pytest.fixture(scope="module")
def okp_jwk():
    return keys.sentinel_jwk("EdDSA")


def with_kid(jwk: dict) -> dict:
    """Recompute kid so that only the rule under test can reject the JWK."""
    return {**jwk, "kid": keys.thumbprint(jwk)}


def test_valid_jwks_load(ec_jwk, okp_jwk):
    for jwk, alg in ((RSA_JWK, "RS256"), (ec_jwk, "ES256"), (okp_jwk, "EdDSA")):
        key = keys.load_public_jwk(jwk)
        assert key.kid == jwk["kid"] and key.algorithm.name == alg
        assert isinstance(key.public_key, key.algorithm.public_key_type)
        assert jwk["kid"] in repr(key) and "n=" not in repr(key)
    assert keys.load_public_jwk({**RSA_JWK, "alg": "PS256"}).algorithm.name == "PS256"


def test_rejects_kid_that_is_not_the_thumbprint(ec_jwk):
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk({**RSA_JWK, "kid": "2011-04-29"})
    with pytest.raises(keys.KeyCoreError):  # another key's kid
        keys.load_public_jwk({**ec_jwk, "kid": RSA_JWK["kid"]})
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk({**RSA_JWK, "kid": RSA_JWK["kid"] + "="})


@pytest.mark.parametrize("kid", [None, "", 17, ["x"]])
def test_rejects_missing_or_non_string_kid(kid):
    jwk = {k: v for k, v in RSA_JWK.items() if k != "kid"}
    if kid is not None:
        jwk["kid"] = kid
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(jwk)


@pytest.mark.parametrize("alg", [None, "none", "HS256", "RS512", "rs256", 256])
def test_rejects_missing_or_unsupported_alg(alg):
    jwk = {k: v for k, v in RSA_JWK.items() if k != "alg"}
    if alg is not None:
        jwk["alg"] = alg
    with pytest.raises(keys.UnsupportedAlgorithm):
        keys.load_public_jwk(jwk)


def test_rejects_alg_that_does_not_match_the_key_type(ec_jwk, okp_jwk):
    cases = [
        {**RSA_JWK, "alg": "ES256"},
        {**RSA_JWK, "alg": "EdDSA"},
        {**ec_jwk, "alg": "RS256"},
        {**ec_jwk, "alg": "EdDSA"},
        {**okp_jwk, "alg": "ES256"},
        {**okp_jwk, "alg": "PS256"},
        with_kid({**ec_jwk, "crv": "P-384"}),
        with_kid({**okp_jwk, "crv": "X25519"}),
        with_kid({**okp_jwk, "crv": "Ed448"}),
    ]
    for jwk in cases:
        with pytest.raises(keys.KeyCoreError):
            keys.load_public_jwk(jwk)


def test_rejects_rsa_keys_under_2048_bits():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    jwk = keys.public_jwk(small, keys.get_algorithm("RS256"))  # exporting is allowed...
    assert jwk["kid"] == keys.thumbprint(jwk)
    with pytest.raises(keys.KeyCoreError, match="too small"):  # ...trusting it is not
        keys.load_public_jwk(jwk)
    with pytest.raises(keys.KeyCoreError, match="too small"):
        keys.load_public_jwk({**jwk, "alg": "PS256"})


def _noncanonical(value: str) -> str:
    """Same bytes for a lenient decoder, a different (non-canonical) spelling."""
    assert len(value) % 4 in (2, 3)
    last = B64URL_ALPHABET.index(value[-1])
    return value[:-1] + B64URL_ALPHABET[last | 1]


def test_rejects_non_canonical_base64url_in_n():
    n = RSA_JWK["n"]
    bad_n = _noncanonical(n)
    assert bad_n != n
    assert unb64(bad_n) == unb64(n)  # a lenient decoder would take it as the same key
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(with_kid({**RSA_JWK, "n": bad_n}))


@pytest.mark.parametrize("member,value", [
    ("n", RSA_JWK["n"] + "=="),
    ("n", RSA_JWK["n"][:100] + " " + RSA_JWK["n"][100:]),
    ("n", RSA_JWK["n"].replace("-", "+").replace("_", "/")),
    ("n", 12345),
    ("e", "AQAB="),
    ("e", 65537),
])
def test_rejects_malformed_rsa_members(member, value):
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(with_kid({**RSA_JWK, member: value}))


def test_rejects_missing_key_members(ec_jwk, okp_jwk):
    for jwk, member in ((RSA_JWK, "n"), (RSA_JWK, "e"), (ec_jwk, "y"), (okp_jwk, "x")):
        with pytest.raises(keys.KeyCoreError):
            keys.load_public_jwk({k: v for k, v in jwk.items() if k != member})


def test_rejects_invalid_points(ec_jwk, okp_jwk):
    off_curve = {**ec_jwk, "y": ec_jwk["x"]}  # (x, x) is not on P-256 for a random x
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(with_kid(off_curve))
    short = {**okp_jwk, "x": okp_jwk["x"][:-4]}
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(with_kid(short))


def test_rejects_symmetric_and_unknown_key_types():
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "x"})
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk({"kty": "oct", "k": "c2VjcmV0", "alg": "RS256", "kid": "x"})


def test_public_set_refuses_bad_jwks_and_supports_revocation(ec_jwk):
    keyset = keys.PublicKeySet([ec_jwk])
    assert ec_jwk["kid"] in keyset and len(keyset) == 1
    with pytest.raises(keys.KeyCoreError):
        keyset.add({**RSA_JWK, "kid": "2011-04-29"})
    assert len(keyset) == 1
    assert keyset.remove(ec_jwk["kid"]) is True
    assert keyset.remove(ec_jwk["kid"]) is False
    assert keyset.get(ec_jwk["kid"]) is None
