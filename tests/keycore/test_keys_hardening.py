"""Rules added after review: one spelling per key and per token."""

from __future__ import annotations

import pytest
from keys_support import b64, unb64

import keys


def test_typ_null_is_refused(rs_signer, make_verifier):
    token = rs_signer.key(rs_signer.header(typ=None))
    with pytest.raises(keys.InvalidClaims):
        make_verifier().verify(token)


def test_non_ascii_key_string_is_malformed(good, make_verifier):
    lookalike = good.key.replace("e", "\u0435", 1)  # Cyrillic e
    with pytest.raises(keys.InvalidKeyString) as exc:
        make_verifier().verify(lookalike)
    assert exc.value.code == "malformed"


def test_rsa_modulus_with_a_leading_zero_byte_is_refused(good):
    jwk = dict(good.public_jwk)
    jwk["n"] = b64(b"\x00" + unb64(jwk["n"]))
    jwk["kid"] = keys.thumbprint(jwk)  # a "valid" second kid for the same key
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(jwk)


def test_ec_coordinates_must_have_the_curve_length(es_signer):
    jwk = dict(es_signer.jwk)
    x = unb64(jwk["x"])
    jwk["x"] = b64(x.lstrip(b"\x00") if x[0] == 0 else b"\x00" + x)
    jwk["kid"] = keys.thumbprint(jwk)
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(jwk)


def test_jwks_document_requires_a_sentinel():
    with pytest.raises(TypeError):
        keys.JWKSDocument()  # type: ignore[call-arg]
    doc = keys.JWKSDocument(sentinel=keys.sentinel_jwk())
    assert doc.render().key_count == 1


def test_future_leeway_covers_clock_skew_for_iat_and_nbf_only(rs_signer, keyset):
    from keys_support import AUDIENCE, ISSUER, NOW

    v = keys.Verifier(keyset, issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW, future_leeway=60)
    v.verify(rs_signer.key(claims=rs_signer.claims(iat=NOW + 30, nbf=NOW + 30)))  # minted by a clock 30 s ahead
    with pytest.raises(keys.NotYetValid):
        v.verify(rs_signer.key(claims=rs_signer.claims(iat=NOW + 61)))
    with pytest.raises(keys.ExpiredToken):  # exp gets no extra leeway
        v.verify(rs_signer.key(claims=rs_signer.claims(exp=NOW)))
