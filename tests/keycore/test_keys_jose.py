"""The joserfc layer under keys/: our policy holds even below the outer checks."""

from __future__ import annotations

import warnings

import pytest
from joserfc.errors import JoseError
from keys_support import AUDIENCE, ISSUER, NOW, b64json, split_key

import keys
from keys import _jose


@pytest.mark.parametrize("member", sorted(keys.UNTRUSTED_HEADERS))
def test_the_jws_registry_itself_refuses_untrusted_headers(member, rs_signer):
    """Defence in depth: even if the verifier's own header check were skipped."""
    policy = _jose.JWSPolicy([keys.get_algorithm("RS256")])
    key = keys.load_public_jwk(rs_signer.jwk).jose_key
    value = {"crit": ["typ"], "x5c": ["MIIB"], "b64": True, "jwk": {"kty": "OKP"}}.get(member, "https://evil.example/k")
    header = rs_signer.header(**{member: value})
    _, h, p, s = split_key(rs_signer.key(header))
    with pytest.raises(JoseError, match=member):  # refused by name, values well-formed
        _jose.verify_compact(header, (h, p, s), key, policy)


def test_the_jws_registry_refuses_algorithms_it_was_not_given(rs_signer):
    policy = _jose.JWSPolicy([keys.get_algorithm("EdDSA")])
    key = keys.load_public_jwk(rs_signer.jwk).jose_key
    _, h, p, s = split_key(rs_signer.key())
    with pytest.raises(JoseError):
        _jose.verify_compact(rs_signer.header(), (h, p, s), key, policy)


def test_a_one_key_set_does_not_verify_a_kid_less_token(ed_signer):
    """joserfc's KeySet picks its only key for a kid-less token; we look up by kid."""
    verifier = keys.Verifier(keys.PublicKeySet([ed_signer.jwk]), issuer=ISSUER, audience=AUDIENCE,
                             algorithms=["EdDSA"], clock=lambda: NOW)
    header = {"alg": "EdDSA", "typ": "JWT"}
    with pytest.raises(keys.MissingKeyId):
        verifier.verify(ed_signer.key(header))


def test_eddsa_goes_through_joserfc_without_its_deprecation_warning(ed_signer):
    verifier = keys.Verifier(keys.PublicKeySet([ed_signer.jwk]), issuer=ISSUER, audience=AUDIENCE,
                             algorithms=["EdDSA"], clock=lambda: NOW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="EdDSA", clock=lambda: NOW)
        assert verifier.verify(ed_signer.key()).algorithm == "EdDSA"
    assert split_key(m.key)[1] == b64json({"alg": "EdDSA", "kid": m.kid, "typ": "JWT"})
    assert m.public_jwk["alg"] == "EdDSA"


def test_a_stray_private_member_does_not_make_a_private_key(ed_signer):
    jwk = {**ed_signer.jwk, "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}
    key = keys.load_public_jwk(jwk)
    assert not key.jose_key.is_private
    assert "d" not in key.jose_key.as_dict()
