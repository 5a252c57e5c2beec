"""keys.Verifier: what passes, the time boundaries, and construction rules."""

from __future__ import annotations

import pytest
from keys_support import AUDIENCE, ISSUER, NOW, split_key

import keys
import keys.hazmat


def test_valid_token_passes(good, make_verifier):
    verified = make_verifier().verify(good.key)
    assert isinstance(verified, keys.VerifiedKey)
    assert (verified.kid, verified.algorithm, verified.prefix) == (good.kid, "RS256", "sk_live_")
    assert verified.claims == good.claims
    assert verified.header == {"alg": "RS256", "kid": good.kid, "typ": "JWT"}
    assert verified.subject == "cus_1"
    assert verified.scopes == frozenset({"read", "write"})
    assert good.key not in repr(verified) and split_key(good.key)[3] not in repr(verified)


def test_valid_token_with_pinned_prefix_passes(good, make_verifier):
    assert make_verifier(prefixes=["sk_test_", "sk_live_"]).verify(good.key).prefix == "sk_live_"


def test_every_signer_verifies_with_its_algorithm(rs_signer, es_signer, ed_signer, make_verifier):
    for signer in (rs_signer, es_signer, ed_signer):
        verified = make_verifier(algorithms=(signer.alg,)).verify(signer.key())
        assert verified.kid == signer.kid and verified.algorithm == signer.alg


def test_audience_list_containing_ours_passes(rs_signer, make_verifier):
    token = rs_signer.key(claims=rs_signer.claims(aud=["other-api", AUDIENCE]))
    assert make_verifier().verify(token).claims["aud"] == ["other-api", AUDIENCE]


def test_missing_typ_is_accepted(rs_signer, make_verifier):
    header = {k: v for k, v in rs_signer.header().items() if k != "typ"}
    assert make_verifier().verify(rs_signer.key(header)).kid == rs_signer.kid


def test_unchecked_issuer_and_audience(rs_signer, make_verifier):
    token = rs_signer.key(claims=rs_signer.claims(iss="anyone", aud="anything"))
    with pytest.raises(keys.InvalidClaims):
        make_verifier().verify(token)
    assert make_verifier(issuer=None, audience=None).verify(token).claims["iss"] == "anyone"


def test_jti_rule_can_be_relaxed(rs_signer, make_verifier):
    token = rs_signer.key(claims=rs_signer.claims(jti="x"))
    with pytest.raises(keys.InvalidClaims):
        make_verifier().verify(token)
    assert make_verifier(require_jti_is_kid=False).verify(token).claims["jti"] == "x"


# --- time ---------------------------------------------------------------------------

@pytest.mark.parametrize("exp,leeway,ok", [
    (NOW + 1, 0, True),
    (NOW, 0, False),  # "now" must be before exp (RFC 7519 §4.1.4)
    (NOW - 1, 0, False),
    (NOW - 1, 30, True),  # leeway accepts a just-expired key
    (NOW - 29, 30, True),
    (NOW - 30, 30, False),
    (NOW - 31, 30, False),
])
def test_exp_boundaries(exp, leeway, ok, rs_signer, make_verifier):
    token = rs_signer.key(claims=rs_signer.claims(exp=exp))
    verifier = make_verifier(leeway=leeway)
    if ok:
        assert verifier.verify(token).claims["exp"] == exp
    else:
        with pytest.raises(keys.ExpiredToken):
            verifier.verify(token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value,leeway,ok", [
    (NOW, 0, True),
    (NOW - 1, 0, True),
    (NOW + 1, 0, False),
    (NOW + 30, 30, True),
    (NOW + 31, 30, False),
])
def test_nbf_and_iat_boundaries(claim, value, leeway, ok, rs_signer, make_verifier):
    token = rs_signer.key(claims=rs_signer.claims(**{claim: value}))
    verifier = make_verifier(leeway=leeway)
    if ok:
        verifier.verify(token)
    else:
        with pytest.raises(keys.NotYetValid):
            verifier.verify(token)


def test_minted_key_with_expiry_over_time(make_verifier):
    m = keys.mint({"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60}, algorithm="ES256", clock=lambda: NOW)
    verifier = make_verifier(keys=keys.PublicKeySet([m.public_jwk]), algorithms=("ES256",))
    assert verifier.verify_at(m.key, NOW).kid == m.kid
    assert verifier.verify_at(m.key, NOW + 59.9).kid == m.kid
    with pytest.raises(keys.ExpiredToken):
        verifier.verify_at(m.key, NOW + 60)
    with pytest.raises(keys.NotYetValid):  # minted "in the future" of this clock
        verifier.verify_at(m.key, NOW - 1)


def test_clock_is_consulted_per_call(good, make_verifier):
    now = [NOW]
    verifier = make_verifier(clock=lambda: now[0])
    verifier.verify(good.key)
    now[0] = NOW - 10  # before the key's iat
    with pytest.raises(keys.NotYetValid):
        verifier.verify(good.key)


# --- construction ----------------------------------------------------------------------

@pytest.mark.parametrize("algorithms,error", [
    ([], ValueError),
    ((), ValueError),
    (["HS256"], keys.UnsupportedAlgorithm),
    (["none"], keys.UnsupportedAlgorithm),
    (["RS256", "none"], keys.UnsupportedAlgorithm),
    (["RS256", "HS256"], keys.UnsupportedAlgorithm),
    (["RS512"], keys.UnsupportedAlgorithm),
    ("RS256", keys.UnsupportedAlgorithm),  # a bare string is not a collection of names
])
def test_verifier_refuses_bad_algorithm_pins(algorithms, error, keyset):
    with pytest.raises(error):
        keys.Verifier(keyset, issuer=ISSUER, audience=AUDIENCE, algorithms=algorithms)


def test_default_pin_is_rs256_only(keyset, es_signer):
    verifier = keys.Verifier(keyset, issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW)
    assert verifier.algorithms == frozenset({"RS256"})
    with pytest.raises(keys.UnsupportedAlgorithm):
        verifier.verify(es_signer.key())


# --- unverified_kid ----------------------------------------------------------------------

def test_unverified_kid(good, rs_signer):
    assert keys.hazmat.unverified_kid(good.key) == good.kid
    with pytest.raises(keys.MissingKeyId):
        keys.hazmat.unverified_kid(rs_signer.key(rs_signer.header(kid="")))
    with pytest.raises(keys.TokenTooLarge):
        keys.hazmat.unverified_kid(good.key, max_token_bytes=100)
    with pytest.raises(keys.InvalidKeyString):
        keys.hazmat.unverified_kid(good.key.encode())
    with pytest.raises(keys.InvalidKeyString):
        keys.hazmat.unverified_kid(good.key[len("sk_live_"):])
