"""Minting: key string shape, header and claims per DESIGN.md, kid = RFC 7638
thumbprint, public JWK hygiene, interop with three independent JOSE
libraries, and the burn of the private key."""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import warnings

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import JWKRegistry
from joserfc.jwt import JWTClaimsRegistry
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt
from keys_support import AUDIENCE, ISSUER, NOW, PRIVATE_MEMBERS, decode_segment, split_key

import keys
import keys.hazmat

ALGS = list(keys.supported_algorithms())
EXP = 4_102_444_800  # 2100-01-01: a hard expiry that real-time libraries still accept
PUBLIC_MEMBERS = {"RSA": {"n", "e"}, "EC": {"crv", "x", "y"}, "OKP": {"crv", "x"}}


def _mint_pair(alg: str):
    plain = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm=alg, clock=lambda: NOW + 0.75)
    full = keys.mint(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "cus_42", "scope": "read write", "exp": EXP},
        algorithm=alg, prefix="sk_test_", clock=lambda: NOW,
    )
    return {"plain": plain, "full": full}


@pytest.fixture(scope="module")
def minted():
    return {alg: _mint_pair(alg) for alg in ALGS}


@pytest.fixture(params=[(a, v) for a in ALGS for v in ("plain", "full")],
                ids=[f"{a}-{v}" for a in ALGS for v in ("plain", "full")])
def one(request, minted):
    alg, variant = request.param
    return alg, minted[alg][variant]


def test_registry_has_the_documented_algorithms():
    assert set(ALGS) >= {"RS256", "PS256", "ES256", "EdDSA"}
    assert keys.DEFAULT_ALGORITHM == "RS256"


# --- shape ------------------------------------------------------------------

def test_key_string_matches_the_scanner_regex(one):
    _, m = one
    match = keys.KEY_STRING_REGEX.fullmatch(m.key)
    assert match is not None
    assert match.group("prefix") == m.prefix
    assert m.prefix in ("sk_live_", "sk_test_")
    assert keys.parse_key_string(m.key).jwt == match.group("jwt")


def test_header_is_exactly_alg_kid_typ(one):
    alg, m = one
    _, h, _, _ = split_key(m.key)
    assert decode_segment(h) == {"alg": alg, "kid": m.kid, "typ": "JWT"}


def test_default_claims(minted):
    for alg in ALGS:
        m = minted[alg]["plain"]
        payload = decode_segment(split_key(m.key)[2])
        # no scope, no exp; sub defaults to the kid; iat is an int (clock truncated)
        assert payload == {"iss": ISSUER, "aud": AUDIENCE, "sub": m.kid, "iat": NOW, "jti": m.kid}
        assert type(payload["iat"]) is int
        assert m.claims == payload


def test_given_claims(minted):
    for alg in ALGS:
        m = minted[alg]["full"]
        payload = decode_segment(split_key(m.key)[2])
        assert payload == {
            "iss": ISSUER, "aud": AUDIENCE, "sub": "cus_42", "scope": "read write",
            "exp": EXP, "iat": NOW, "jti": m.kid,
        }
        assert m.claims == payload


def test_none_valued_claims_are_left_out():
    m = keys.mint({"iss": ISSUER, "aud": AUDIENCE, "scope": None, "exp": None, "sub": None},
                  algorithm="EdDSA", clock=lambda: NOW)
    assert m.claims == {"iss": ISSUER, "aud": AUDIENCE, "sub": m.kid, "iat": NOW, "jti": m.kid}


def test_kid_is_the_rfc7638_thumbprint(one):
    _, m = one
    assert m.kid == m.public_jwk["kid"] == keys.thumbprint(m.public_jwk)
    assert m.kid == jwcrypto_jwk.JWK(**m.public_jwk).thumbprint()
    assert m.kid == JWKRegistry.import_key(m.public_jwk).thumbprint()


def test_public_jwk_has_kid_alg_and_no_private_members(one):
    alg, m = one
    jwk = m.public_jwk
    algorithm = keys.get_algorithm(alg)
    assert jwk["alg"] == alg and jwk["kty"] == algorithm.kty
    assert jwk.get("crv") == algorithm.crv
    assert not set(PRIVATE_MEMBERS) & set(jwk)
    assert set(jwk) <= {"kty", "kid", "alg", "use"} | PUBLIC_MEMBERS[jwk["kty"]]
    assert keys.load_public_jwk(jwk).kid == m.kid


def test_each_mint_uses_a_fresh_keypair(minted):
    kids = [minted[a][v].kid for a in ALGS for v in ("plain", "full")]
    assert len(set(kids)) == len(kids)
    more = {keys.mint({}, algorithm="EdDSA").kid for _ in range(20)}
    assert len(more) == 20


# --- interop: three independent libraries ------------------------------------

def test_pyjwt_verifies(one):
    alg, m = one
    key = pyjwt.PyJWK(m.public_jwk)
    claims = pyjwt.decode(
        m.key[len(m.prefix):], key.key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER,
        options={"require": ["iss", "aud", "iat", "jti", "sub"]},
    )
    assert claims == m.claims
    assert pyjwt.get_unverified_header(m.key[len(m.prefix):])["kid"] == m.kid


def test_jwcrypto_verifies(one):
    alg, m = one
    key = jwcrypto_jwk.JWK(**m.public_jwk)
    token = jwcrypto_jwt.JWT(
        jwt=m.key[len(m.prefix):], key=key, algs=[alg],
        check_claims={"iss": ISSUER, "aud": AUDIENCE, "jti": m.kid},
    )
    assert json.loads(token.claims) == m.claims


def test_joserfc_verifies(one):
    alg, m = one
    key = JWKRegistry.import_key(m.public_jwk)
    with warnings.catch_warnings():
        # joserfc prefers the RFC 9864 name "Ed25519"; our tokens (and Envoy)
        # use the registered name "EdDSA", which joserfc still accepts.
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        token = joserfc_jwt.decode(m.key[len(m.prefix):], key, algorithms=[alg])
    assert token.header == {"alg": alg, "kid": m.kid, "typ": "JWT"}
    JWTClaimsRegistry(
        now=NOW + 1, iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE},
        jti={"essential": True, "value": m.kid},
    ).validate(token.claims)
    assert token.claims == m.claims


def test_other_libraries_reject_a_tampered_minted_key(minted):
    m = minted["ES256"]["plain"]
    _, h, p, s = split_key(m.key)
    forged = f"{h}.{p[:-2]}{'A' if p[-2] != 'A' else 'B'}{p[-1]}.{s}"
    with pytest.raises(pyjwt.exceptions.InvalidSignatureError):
        pyjwt.decode(forged, pyjwt.PyJWK(m.public_jwk).key, algorithms=["ES256"], audience=AUDIENCE)


def test_our_verifier_verifies(one):
    alg, m = one
    verifier = keys.Verifier(keys.PublicKeySet([m.public_jwk]), issuer=ISSUER, audience=AUDIENCE,
                             algorithms=[alg], clock=lambda: NOW + 5)
    verified = verifier.verify(m.key)
    assert (verified.kid, verified.algorithm, verified.prefix, verified.claims) == (m.kid, alg, m.prefix, m.claims)


# --- burn: mint keeps no reference to the private key -------------------------

def _baseline_refcount() -> int:
    holder = [object()]
    return sys.getrefcount(holder[0])


def _capturing(monkeypatch, alg: str) -> list:
    original = keys.hazmat.ALGORITHMS[alg]
    captured: list = []

    def generate():
        key = original.generate()
        captured.append(key)
        return key

    monkeypatch.setitem(keys.hazmat.ALGORITHMS, alg, dataclasses.replace(original, generate=generate))
    return captured


@pytest.mark.parametrize("alg", ALGS)
def test_mint_keeps_no_reference_to_the_private_key(alg, monkeypatch):
    captured = _capturing(monkeypatch, alg)
    minted = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm=alg, clock=lambda: NOW)
    assert len(captured) == 1, "mint must generate exactly one keypair"
    assert keys.thumbprint(keys.public_jwk(captured[0].public_key(), keys.get_algorithm(alg))) == minted.kid
    gc.collect()
    # (counted outside `assert`: pytest's assertion rewriting holds temporaries)
    baseline = _baseline_refcount()
    count = sys.getrefcount(captured[0])
    referrers = gc.get_referrers(captured[0])
    assert count == baseline, "something kept a reference to the private key"
    assert referrers == [captured]
    # the probe is sensitive: one more holder shows up
    extra = captured[0]
    count_with_extra = sys.getrefcount(captured[0])
    del extra
    assert count_with_extra == baseline + 1


def test_mint_with_keypair_keeps_no_reference(monkeypatch):
    captured: list = []

    def take():
        key = ec.generate_private_key(ec.SECP256R1())
        captured.append(key)
        return key

    m = keys.hazmat.mint_with_keypair(take, {"iss": ISSUER, "aud": AUDIENCE}, algorithm="ES256", clock=lambda: NOW)
    assert len(captured) == 1
    gc.collect()
    baseline = _baseline_refcount()
    count = sys.getrefcount(captured[0])
    assert count == baseline, "something kept a reference to the private key"
    assert m.kid == keys.thumbprint(keys.public_jwk(captured[0].public_key(), keys.get_algorithm("ES256")))


def test_mint_with_keypair_signs_with_the_given_key():
    key = ec.generate_private_key(ec.SECP256R1())
    expected_kid = keys.public_jwk(key.public_key(), keys.get_algorithm("ES256"))["kid"]
    calls = []

    def take():
        calls.append(1)
        return key

    m = keys.hazmat.mint_with_keypair(take, {"iss": ISSUER, "aud": AUDIENCE, "sub": "u"},
                               algorithm="ES256", prefix="sk_test_", clock=lambda: NOW)
    assert calls == [1]
    assert m.kid == expected_kid and m.prefix == "sk_test_" and m.claims["sub"] == "u"
    claims = pyjwt.decode(m.key[len("sk_test_"):], key.public_key(), algorithms=["ES256"], audience=AUDIENCE)
    assert claims["jti"] == expected_kid


def test_mint_with_keypair_refuses_a_key_of_the_wrong_type():
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(keys.KeyCoreError):
        keys.hazmat.mint_with_keypair(lambda: key, {}, algorithm="RS256")


def test_repr_never_shows_the_token(minted):
    for alg in ALGS:
        m = minted[alg]["full"]
        _, h, p, s = split_key(m.key)
        for text in (repr(m), str(m), repr(keys.parse_key_string(m.key))):
            assert m.key not in text
            assert s not in text and p not in text and h not in text
        assert m.kid in repr(m)


# --- refusals -------------------------------------------------------------------

@pytest.mark.parametrize("claims", [{"jti": "mine"}, {"jti": None}, {"iss": "i", "jti": "x"}])
def test_mint_refuses_jti(claims, monkeypatch):
    captured = _capturing(monkeypatch, "EdDSA")
    with pytest.raises(ValueError):
        keys.mint(claims, algorithm="EdDSA")
    assert captured == []  # refused before any keypair was generated
    with pytest.raises(ValueError):
        keys.hazmat.mint_with_keypair(lambda: pytest.fail("must not take a key"), claims, algorithm="EdDSA")


@pytest.mark.parametrize("prefix", ["", "SK_", "sk", "sk-live_", "_sk_", "sk live_", "sk_live", "a" * 17 + "_",
                                    "a_b_c_d_e_", None, b"sk_live_"])
def test_mint_refuses_bad_prefix(prefix, monkeypatch):
    captured = _capturing(monkeypatch, "EdDSA")
    with pytest.raises(ValueError):
        keys.mint({}, algorithm="EdDSA", prefix=prefix)
    assert captured == []
    with pytest.raises(ValueError):
        keys.hazmat.mint_with_keypair(lambda: pytest.fail("must not take a key"), {}, algorithm="EdDSA", prefix=prefix)


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "ES512", "Ed25519", "rs256", None])
def test_mint_refuses_unknown_algorithms(alg):
    with pytest.raises(keys.UnsupportedAlgorithm):
        keys.mint({}, algorithm=alg)


def test_mint_refuses_claims_that_are_not_json():
    # NaN is not JSON (RFC 8259); a token carrying "exp": NaN is rejected by
    # gateways and would never expire in a lenient verifier.
    with pytest.raises(ValueError):
        keys.mint({"exp": float("nan")}, algorithm="EdDSA")
    with pytest.raises(ValueError):
        keys.mint({"exp": float("inf")}, algorithm="EdDSA")
