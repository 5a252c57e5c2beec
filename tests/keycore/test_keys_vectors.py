"""Published RFC test vectors (tests/keys/data/*.json) against keys/.

Thumbprints: RFC 7638 §3.1 (RSA) and RFC 8037 A.3 (Ed25519).
Signatures:  RFC 7520 §4.1 (RS256, key of §3.3), RFC 8037 A.4/A.5 (EdDSA),
             RFC 7515 A.3 (ES256). RFC 7520 §3.1/§3.2/§4.3 use P-521/ES512
             and §4.2 PS384, which our registry does not support.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jwcrypto_jwk
from keys_support import P256_ORDER, b64, flip_s, load_json, unb64

import keys
import keys.hazmat

THUMBPRINTS = load_json("thumbprints.json")["vectors"]
SIGNATURES = load_json("signatures.json")["vectors"]


def _verifies(alg: keys.Algorithm, key: keys.VerificationKey, data: bytes, signature: bytes) -> bool:
    """The registry's signature check alone (joserfc's model, our low-S rule)."""
    return bool(alg.jws.verify(data, signature, key.jose_key))


def _low_s(alg: str, signature: bytes) -> bytes:
    """RFC 7515 A.3 happens to have a high s; we accept only its low-S twin."""
    if alg == "ES256" and int.from_bytes(signature[32:], "big") > P256_ORDER // 2:
        return flip_s(signature)
    return signature


def _ids(vectors):
    return [v["id"] for v in vectors]


def _published(jwk: dict, alg: str) -> dict:
    """The vector's key as we would publish it: kid = thumbprint, alg set."""
    out = {m: jwk[m] for m in ("kty", "crv", "n", "e", "x", "y") if m in jwk}
    out["alg"] = alg
    out["kid"] = keys.thumbprint(out)
    return out


def test_vector_files_are_not_empty():
    assert len(THUMBPRINTS) >= 2 and len(SIGNATURES) >= 3
    assert {v["alg"] for v in SIGNATURES} <= set(keys.supported_algorithms())


# --- thumbprints ------------------------------------------------------------

@pytest.mark.parametrize("vector", THUMBPRINTS, ids=_ids(THUMBPRINTS))
def test_thumbprint_matches_rfc(vector):
    assert keys.thumbprint(vector["jwk"]) == vector["thumbprint"]


@pytest.mark.parametrize("vector", THUMBPRINTS, ids=_ids(THUMBPRINTS))
def test_thumbprint_is_sha256_of_the_canonical_json(vector):
    digest = hashlib.sha256(vector["canonical_json"].encode("utf-8")).digest()
    assert b64(digest) == vector["thumbprint"]
    if "thumbprint_sha256_hex" in vector:
        assert digest.hex() == vector["thumbprint_sha256_hex"]


@pytest.mark.parametrize("vector", THUMBPRINTS, ids=_ids(THUMBPRINTS))
def test_thumbprint_agrees_with_jwcrypto(vector):
    assert jwcrypto_jwk.JWK(**vector["jwk"]).thumbprint() == vector["thumbprint"]


@pytest.mark.parametrize("vector", THUMBPRINTS, ids=_ids(THUMBPRINTS))
def test_thumbprint_ignores_kid_alg_use_and_member_order(vector):
    jwk = dict(reversed(list(vector["jwk"].items())))
    jwk.update(kid="anything", alg="whatever", use="sig")
    assert keys.thumbprint(jwk) == vector["thumbprint"]


@pytest.mark.parametrize("vector", THUMBPRINTS, ids=_ids(THUMBPRINTS))
def test_thumbprint_depends_on_the_key_material(vector):
    jwk = dict(vector["jwk"])
    member = "n" if jwk["kty"] == "RSA" else "x"
    jwk[member] = jwk[member][:-2] + ("AA" if not jwk[member].endswith("AA") else "BA")
    assert keys.thumbprint(jwk) != vector["thumbprint"]


def test_thumbprint_of_incomplete_jwk_is_a_key_core_error():
    with pytest.raises(keys.KeyCoreError):
        keys.thumbprint({"kty": "OKP", "crv": "Ed25519"})
    with pytest.raises(keys.KeyCoreError):
        keys.thumbprint({"kty": "oct", "k": "c2VjcmV0"})


def test_rfc7638_jwk_loads_only_with_its_thumbprint_as_kid():
    vector = THUMBPRINTS[0]
    assert vector["jwk"]["kid"] == "2011-04-29"
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk(vector["jwk"])  # kid is a date, not the thumbprint
    loaded = keys.load_public_jwk({**vector["jwk"], "kid": vector["thumbprint"]})
    assert loaded.kid == vector["thumbprint"]
    assert loaded.algorithm is keys.get_algorithm("RS256")


def test_rfc8037_key_round_trips_through_public_jwk():
    vector = THUMBPRINTS[1]
    public_key = ed25519.Ed25519PublicKey.from_public_bytes(unb64(vector["jwk"]["x"]))
    jwk = keys.public_jwk(public_key, keys.get_algorithm("EdDSA"))
    assert jwk == {
        "kty": "OKP", "crv": "Ed25519", "x": vector["jwk"]["x"],
        "kid": vector["thumbprint"], "alg": "EdDSA", "use": "sig",
    }
    assert keys.load_public_jwk(jwk).kid == vector["thumbprint"]


def test_rfc7638_key_round_trips_through_public_jwk():
    vector = THUMBPRINTS[0]
    n = int.from_bytes(unb64(vector["jwk"]["n"]), "big")
    e = int.from_bytes(unb64(vector["jwk"]["e"]), "big")
    jwk = keys.public_jwk(rsa.RSAPublicNumbers(e, n).public_key(), keys.get_algorithm("RS256"))
    assert (jwk["n"], jwk["e"], jwk["kid"]) == (vector["jwk"]["n"], "AQAB", vector["thumbprint"])


# --- signatures ---------------------------------------------------------------

@pytest.mark.parametrize("vector", SIGNATURES, ids=_ids(SIGNATURES))
def test_vector_payload_and_header_match_the_compact_form(vector):
    h64, p64, _ = vector["compact"].split(".")
    assert unb64(p64).decode("utf-8") == vector["payload"]
    assert json.loads(unb64(h64)) == vector["protected"]


@pytest.mark.parametrize("vector", SIGNATURES, ids=_ids(SIGNATURES))
def test_registry_verifies_rfc_signature(vector):
    alg = keys.get_algorithm(vector["alg"])
    key = keys.load_public_jwk(_published(vector["jwk"], vector["alg"]))
    assert isinstance(key.public_key, alg.public_key_type)
    h64, p64, s64 = vector["compact"].split(".")
    assert _verifies(alg, key, f"{h64}.{p64}".encode("ascii"), _low_s(alg.name, unb64(s64)))


@pytest.mark.parametrize("vector", SIGNATURES, ids=_ids(SIGNATURES))
def test_registry_rejects_rfc_signature_with_one_bit_flipped(vector):
    alg = keys.get_algorithm(vector["alg"])
    key = keys.load_public_jwk(_published(vector["jwk"], vector["alg"]))
    h64, p64, s64 = vector["compact"].split(".")
    signature = bytearray(_low_s(alg.name, unb64(s64)))
    signature[len(signature) // 3] ^= 0x01
    assert not _verifies(alg, key, f"{h64}.{p64}".encode("ascii"), bytes(signature))


@pytest.mark.parametrize("vector", SIGNATURES, ids=_ids(SIGNATURES))
def test_registry_rejects_rfc_signature_over_other_input(vector):
    alg = keys.get_algorithm(vector["alg"])
    key = keys.load_public_jwk(_published(vector["jwk"], vector["alg"]))
    h64, p64, s64 = vector["compact"].split(".")
    assert not _verifies(alg, key, f"{h64}.{p64}X".encode("ascii"), _low_s(alg.name, unb64(s64)))


def test_rfc7520_rs256_signature_does_not_verify_as_ps256():
    vector = next(v for v in SIGNATURES if v["alg"] == "RS256")
    key = keys.load_public_jwk(_published(vector["jwk"], "PS256"))
    h64, p64, s64 = vector["compact"].split(".")
    assert not _verifies(keys.get_algorithm("PS256"), key, f"{h64}.{p64}".encode("ascii"), unb64(s64))


def test_rfc7520_key_with_its_email_kid_is_refused():
    vector = next(v for v in SIGNATURES if v["id"].startswith("rfc7520"))
    with pytest.raises(keys.KeyCoreError):
        keys.load_public_jwk({**vector["jwk"], "alg": "RS256"})


def test_rfc7515_es256_signature_is_raw_r_s_not_der():
    vector = next(v for v in SIGNATURES if v["alg"] == "ES256")
    key = keys.load_public_jwk(_published(vector["jwk"], "ES256"))
    assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
    assert len(unb64(vector["compact"].split(".")[2])) == 64


def test_es256_verify_refuses_zero_padded_signature_halves():
    vector = next(v for v in SIGNATURES if v["alg"] == "ES256")
    key = keys.load_public_jwk(_published(vector["jwk"], "ES256"))
    h64, p64, s64 = vector["compact"].split(".")
    raw = _low_s("ES256", unb64(s64))
    es256 = keys.get_algorithm("ES256")
    assert _verifies(es256, key, f"{h64}.{p64}".encode("ascii"), raw)
    for padded in (raw[:32] + bytes(2) + raw[32:], bytes(1) + raw[:32] + bytes(1) + raw[32:], raw + bytes(1)):
        assert not _verifies(es256, key, f"{h64}.{p64}".encode("ascii"), padded)


def test_rfc7515_es256_high_s_signature_is_refused_and_its_twin_accepted():
    """Bug 1: (r, s) and (r, n - s) both satisfy ECDSA; only low S is one spelling."""
    vector = next(v for v in SIGNATURES if v["alg"] == "ES256")
    key = keys.load_public_jwk(_published(vector["jwk"], "ES256"))
    h64, p64, s64 = vector["compact"].split(".")
    data, raw = f"{h64}.{p64}".encode("ascii"), unb64(s64)
    es256 = keys.get_algorithm("ES256")
    assert int.from_bytes(raw[32:], "big") > P256_ORDER // 2  # the RFC's s is high
    assert not _verifies(es256, key, data, raw)
    assert _verifies(es256, key, data, flip_s(raw))
