"""Issue 11, strict-verifier bugs 1 and 2, on every algorithm we publish.

Bug 1: ES256 signatures were malleable: (r, n - s) verifies as well as (r, s),
so one key had two spellings. We mint low-S only and accept low-S only.

Bug 2: a NumericDate written ``1e400`` parsed as infinity and passed: a key
with ``"exp": 1e400`` never expired. NumericDates are integers in
0 .. 253402300799 (year 9999); a non-finite number is not JSON we accept.
"""

from __future__ import annotations

import json

import jwt as pyjwt
import pytest
from keys_support import AUDIENCE, DROP, ISSUER, NOW, P256_ORDER, PREFIX, Signer, b64, flip_s, split_key, unb64

import keys

ALGS = ("RS256", "PS256", "ES256", "EdDSA")
MAX_DATE = 253402300799


@pytest.fixture(scope="module")
def signers(rs_signer, es_signer, ed_signer) -> dict[str, Signer]:
    return {"RS256": rs_signer, "PS256": Signer.generate("PS256"), "ES256": es_signer, "EdDSA": ed_signer}


@pytest.fixture(scope="module")
def verifier(signers) -> keys.Verifier:
    keyset = keys.PublicKeySet([s.jwk for s in signers.values()])
    return keys.Verifier(keyset, issuer=ISSUER, audience=AUDIENCE, algorithms=ALGS, clock=lambda: NOW)


def _raw_claims(signer: Signer, **members: str) -> str:
    """A signed key whose payload carries members spelled exactly as given."""
    base = signer.claims(**dict.fromkeys(members, DROP))  # no duplicate members
    text = json.dumps(base, separators=(",", ":"))[:-1]
    text += "".join(f',"{name}":{literal}' for name, literal in members.items()) + "}"
    return signer.key(payload_segment=b64(text.encode("utf-8")))


# --- bug 1: one spelling per ES256 signature --------------------------------------

def _s(key: str) -> int:
    return int.from_bytes(unb64(split_key(key)[3])[32:], "big")


def _with_signature(key: str, signature: bytes) -> str:
    prefix, h, p, _ = split_key(key)
    return f"{prefix}{h}.{p}.{b64(signature)}"


def test_minted_es256_signatures_are_low_s():
    # half of raw ECDSA signatures are high-S: 40 mints all low is no accident (2^-40)
    for _ in range(40):
        m = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="ES256", clock=lambda: NOW)
        assert _s(m.key) <= P256_ORDER // 2


def test_high_s_twin_of_a_minted_key_is_refused():
    m = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="ES256", clock=lambda: NOW)
    twin = _with_signature(m.key, flip_s(unb64(split_key(m.key)[3])))
    assert twin != m.key
    # control: the twin is a valid ECDSA signature, so the bug was real
    assert pyjwt.decode(twin[len(PREFIX):], pyjwt.PyJWK(m.public_jwk).key, algorithms=["ES256"],
                        audience=AUDIENCE, options={"verify_iat": False})["jti"] == m.kid
    v = keys.Verifier(keys.PublicKeySet([m.public_jwk]), issuer=ISSUER, audience=AUDIENCE,
                      algorithms=["ES256"], clock=lambda: NOW)
    assert v.verify(m.key).kid == m.kid
    with pytest.raises(keys.BadSignature):
        v.verify(twin)


def test_high_s_signature_from_the_key_holder_is_refused(signers, verifier):
    es = signers["ES256"]
    high = es.key(sign_alg="ES256-high-s")
    assert _s(high) > P256_ORDER // 2
    with pytest.raises(keys.BadSignature):
        verifier.verify(high)
    low = es.key()
    assert _s(low) <= P256_ORDER // 2 and verifier.verify(low).kid == es.kid


# --- bug 2: NumericDates are finite integers ---------------------------------------

@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E400", "1e309"])
def test_non_finite_numeric_date_is_refused(alg, claim, literal, signers, verifier):
    with pytest.raises(keys.InvalidKeyString) as caught:
        verifier.verify(_raw_claims(signers[alg], **{claim: literal}))
    assert caught.value.code == "malformed"


@pytest.mark.parametrize("alg", ALGS)
def test_never_expiring_exp_1e400_is_refused_anywhere_in_the_claims(alg, signers, verifier):
    with pytest.raises(keys.InvalidKeyString):
        verifier.verify(_raw_claims(signers[alg], extra="1e400"))


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("literal", [
    "1.0",  # integral float: refused too (our minter writes ints; one spelling)
    "1e9",  # exponent notation is a float in JSON parsers
    "1700000030.5",
    "true",
    "-1",
    str(MAX_DATE + 1),
    "99999999999999999999999999",
    '"1700000030"',
    "null",
])
def test_numeric_date_that_is_not_an_integer_in_range_is_invalid(alg, claim, literal, signers, verifier):
    with pytest.raises(keys.InvalidClaims) as caught:
        verifier.verify(_raw_claims(signers[alg], **{claim: literal}))
    assert caught.value.code == "invalid_claims"  # not expired / not_yet_valid: the value is wrong


@pytest.mark.parametrize("alg", ALGS)
def test_numeric_dates_at_the_range_bounds_pass(alg, signers, verifier):
    s = signers[alg]
    verified = verifier.verify(s.key(claims=s.claims(exp=MAX_DATE, iat=0, nbf=0)))
    assert verified.claims["exp"] == MAX_DATE and verified.kid == s.kid


@pytest.mark.parametrize("alg", ALGS)
def test_integer_exp_still_expires(alg, signers, verifier):
    s = signers[alg]
    assert verifier.verify(s.key(claims=s.claims(exp=NOW + 1))).kid == s.kid
    with pytest.raises(keys.ExpiredToken):
        verifier.verify(s.key(claims=s.claims(exp=NOW)))


@pytest.mark.parametrize("value", [1.0, 1e400, float("inf"), True, -1, MAX_DATE + 1, "1"])
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_mint_refuses_what_the_verifier_would_refuse(claim, value):
    with pytest.raises(ValueError):
        keys.mint({"iss": ISSUER, claim: value}, algorithm="EdDSA")
