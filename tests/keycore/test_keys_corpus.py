"""The bad-token corpus: every entry must be refused by keys.Verifier with
exactly the right error class and code.

Tokens are built from a good RS256 key minted by keys.mint (for tampering:
those break the signature) or signed with a test-held keypair whose public
JWK is in the key set (so the signature is valid and only the rule under
test can refuse the token). ``test_corpus_controls_verify`` proves that the
unmodified bases do verify with the same verifiers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from keys_support import (
    AUDIENCE,
    B64URL_ALPHABET,
    DROP,
    ISSUER,
    NOW,
    PREFIX,
    Signer,
    b64,
    b64json,
    decode_segment,
    load_json,
    raw_sign,
    split_key,
    unb64,
)

import keys

LIVE = PREFIX
RFC8037_A4 = next(v for v in load_json("signatures.json")["vectors"] if v["alg"] == "EdDSA")["compact"]


@dataclass
class Ctx:
    good: keys.MintedKey  # minted by keys.mint, RS256, private key gone
    rs: Signer  # test-held RS256 keypair, published
    es: Signer  # test-held ES256 keypair, published
    ed: Signer  # test-held EdDSA keypair, published

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return split_key(self.good.key)

    def good_header(self) -> dict[str, Any]:
        return decode_segment(self.parts[1])

    def good_claims(self) -> dict[str, Any]:
        return decode_segment(self.parts[2])

    def with_header(self, header: dict[str, Any] | None = None, *, segment: str | None = None,
                    sig: str | None = None) -> str:
        """The good token with its header replaced (signature kept, so it no longer matches)."""
        prefix, _, p, s = self.parts
        h = segment if segment is not None else b64json(header)
        return f"{prefix}{h}.{p}.{s if sig is None else sig}"

    def with_payload(self, claims: dict[str, Any]) -> str:
        return self.with_payload_segment(b64json(claims))

    def with_payload_segment(self, segment: str) -> str:
        prefix, h, _, s = self.parts
        return f"{prefix}{h}.{segment}.{s}"

    def with_sig(self, sig: str) -> str:
        prefix, h, p, _ = self.parts
        return f"{prefix}{h}.{p}.{sig}"

    def public_pem(self) -> bytes:
        key = keys.load_public_jwk(self.good.public_jwk).public_key
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], Any]
    error: type[keys.KeyCoreError]
    code: str
    verifier: dict[str, Any] = field(default_factory=dict)


def _flip_byte(sig: str, index: int) -> str:
    raw = bytearray(unb64(sig))
    raw[index] ^= 0x40
    return b64(bytes(raw))


def _noncanonical_last(seg: str) -> str:
    assert len(seg) % 4 in (2, 3), "no spare bits to abuse"
    last = B64URL_ALPHABET.index(seg[-1])
    return seg[:-1] + B64URL_ALPHABET[last | 1]


def _dup_header(ctx: Ctx, body: str) -> str:
    return ctx.rs.key(header_segment=b64(body.replace("KID", ctx.rs.kid).encode()))


def _hs256_with_public_pem(ctx: Ctx) -> str:
    header = {"alg": "HS256", "kid": ctx.good.kid, "typ": "JWT"}
    h, p = b64json(header), ctx.parts[2]
    return f"{LIVE}{h}.{p}.{b64(raw_sign('HS256', ctx.public_pem(), f'{h}.{p}'.encode()))}"


def _es256_padded_s(ctx: Ctx) -> str:
    prefix, h, p, sig = split_key(ctx.es.key())
    raw = unb64(sig)
    return f"{prefix}{h}.{p}.{b64(raw[:32] + bytes(2) + raw[32:])}"


def _oversized_signed(ctx: Ctx) -> str:
    return ctx.rs.key(claims=ctx.rs.claims(pad="x" * 9000))


BOTH = {"algorithms": ("RS256", "ES256")}
RS_PS = {"algorithms": ("RS256", "PS256")}
ALL = {"algorithms": ("RS256", "PS256", "ES256", "EdDSA")}

U = keys.UnsupportedAlgorithm, "unsupported_alg"
M = keys.InvalidKeyString, "malformed"
B = keys.BadSignature, "bad_signature"
C = keys.InvalidClaims, "invalid_claims"
K = keys.MissingKeyId, "missing_kid"
N = keys.UnknownKeyId, "unknown_kid"
H = keys.UntrustedHeader, "untrusted_header"
E = keys.ExpiredToken, "expired"
Y = keys.NotYetValid, "not_yet_valid"
T = keys.TokenTooLarge, "too_large"
P = keys.WrongPrefix, "wrong_prefix"


def case(id: str, build, expected, **verifier) -> Case:
    return Case(id, build, expected[0], expected[1], verifier)


CORPUS = [
    # --- algorithm confusion -------------------------------------------------
    case("alg-none-empty-signature", lambda c: c.with_header({**c.good_header(), "alg": "none"}, sig=""), U),
    case("alg-none-with-signature", lambda c: c.with_header({**c.good_header(), "alg": "none"}), U),
    case("alg-None-capitalized", lambda c: c.with_header({**c.good_header(), "alg": "None"}, sig=""), U),
    case("alg-none-all-algs-pinned", lambda c: c.with_header({**c.good_header(), "alg": "none"}, sig=""), U, **ALL),
    case("alg-hs256-rsa-pem-as-hmac-secret", _hs256_with_public_pem, U),
    case("alg-hs256-rsa-pem-all-pinned", _hs256_with_public_pem, U, **ALL),
    case("alg-changed-to-rs512", lambda c: c.with_header({**c.good_header(), "alg": "RS512"}), U),
    case("alg-changed-to-es256-not-pinned", lambda c: c.with_header({**c.good_header(), "alg": "ES256"}), U),
    case("alg-changed-to-es256-pinned", lambda c: c.with_header({**c.good_header(), "alg": "ES256"}), U, **BOTH),
    case("alg-changed-to-ps256-pinned", lambda c: c.with_header({**c.good_header(), "alg": "PS256"}), U, **RS_PS),
    case("alg-lowercase", lambda c: c.with_header({**c.good_header(), "alg": "rs256"}), U),
    case("alg-missing", lambda c: c.rs.key(c.rs.header(alg=DROP)), U),
    case("alg-not-a-string", lambda c: c.rs.key(c.rs.header(alg=["RS256"])), U),
    case("alg-null", lambda c: c.rs.key(c.rs.header(alg=None)), U),
    # a real ES256 signature, by a published ES256 key, but naming an RS256 JWK
    case("es256-token-whose-jwk-says-rs256",
         lambda c: c.es.key(c.es.header(kid=c.rs.kid), c.es.claims(jti=c.rs.kid)), U, **BOTH),
    # a real PS256 signature by the RS256 key's own private half
    case("ps256-signature-for-rs256-jwk",
         lambda c: c.rs.key(c.rs.header(alg="PS256"), sign_alg="PS256"), U, **RS_PS),
    # a real RS256 signature naming the ES256 key
    case("rs256-token-whose-jwk-says-es256",
         lambda c: c.rs.key(c.rs.header(kid=c.es.kid), c.rs.claims(jti=c.es.kid)), U, **BOTH),
    case("eddsa-token-verifier-pins-rs256", lambda c: c.ed.key(), U),
    case("rfc8037-a4-vector-not-pinned", lambda c: LIVE + RFC8037_A4, U),
    case("rfc8037-a4-vector-has-no-kid", lambda c: LIVE + RFC8037_A4, K, **ALL),
    # --- key id ----------------------------------------------------------------
    case("kid-unknown", lambda c: c.rs.key(c.rs.header(kid=b64(b"\x01" * 32))), N),
    case("kid-1000-chars", lambda c: c.rs.key(c.rs.header(kid="A" * 1000)), N),
    case("kid-1000-chars-prefix-of-real", lambda c: c.rs.key(c.rs.header(kid=c.rs.kid + "A" * 957)), N),
    case("kid-missing", lambda c: c.rs.key(c.rs.header(kid=DROP)), K),
    case("kid-empty-string", lambda c: c.rs.key(c.rs.header(kid="")), K),
    case("kid-not-a-string", lambda c: c.rs.key(c.rs.header(kid=12345)), K),
    case("kid-null", lambda c: c.rs.key(c.rs.header(kid=None)), K),
    case("kid-list", lambda c: c.rs.key(c.rs.header(kid=[c.rs.kid])), K),
    # --- signature ---------------------------------------------------------------
    case("tampered-header-added-member", lambda c: c.with_header({**c.good_header(), "x": 1}), B),
    case("tampered-header-reordered", lambda c: c.with_header(dict(reversed(list(c.good_header().items())))), B),
    case("tampered-payload-sub", lambda c: c.with_payload({**c.good_claims(), "sub": "admin"}), B),
    case("tampered-payload-scope", lambda c: c.with_payload({**c.good_claims(), "scope": "read write admin"}), B),
    case("tampered-payload-same-claims-respelled",
         lambda c: c.with_payload_segment(b64(json.dumps(c.good_claims()).encode())), B),
    case("tampered-signature-flipped-byte", lambda c: c.with_sig(_flip_byte(c.parts[3], 100)), B),
    case("tampered-signature-flipped-last-byte", lambda c: c.with_sig(_flip_byte(c.parts[3], -1)), B),
    case("signature-truncated-one-byte", lambda c: c.with_sig(b64(unb64(c.parts[3])[:-1])), B),
    case("signature-truncated-half", lambda c: c.with_sig(b64(unb64(c.parts[3])[:128])), B),
    case("signature-truncated-one-char", lambda c: c.with_sig(c.parts[3][:-1]), M),
    case("signature-empty", lambda c: c.with_sig(""), M),
    case("signature-of-another-token", lambda c: c.with_sig(split_key(c.rs.key())[3]), B),
    case("signed-by-other-key-with-published-kid",
         lambda c: c.rs.key(c.rs.header(kid=c.good.kid), c.rs.claims(jti=c.good.kid)), B),
    case("payload-with-tab", lambda c: c.with_payload_segment(c.parts[2][:5] + "\t" + c.parts[2][5:]), B),
    # one extra base64url character after the signature. 'A' keeps the encoding
    # canonical (the decoded signature is one byte too long); 'B' does not.
    case("signature-extra-char-canonical", lambda c: c.with_sig(c.parts[3] + "A"), B),
    case("signature-extra-char-noncanonical", lambda c: c.with_sig(c.parts[3] + "B"), M),
    case("es256-signature-extra-char-canonical", lambda c: c.es.key() + "A", B, **BOTH),
    case("es256-signature-extra-char-noncanonical", lambda c: c.es.key() + "B", M, **BOTH),
    case("eddsa-signature-extra-char-canonical", lambda c: c.ed.key() + "A", B, algorithms=("EdDSA",)),
    # r || 00 00 || s: a lenient ECDSA decoder (s = int(sig[32:])) would accept it
    case("es256-signature-zero-padded-s", lambda c: _es256_padded_s(c), B, **BOTH),
    case("signature-noncanonical-last-char", lambda c: c.with_sig(_noncanonical_last(c.parts[3])), M),
    case("signature-padding-appended", lambda c: c.with_sig(c.parts[3] + "=="), M),
    case("signature-single-padding-char", lambda c: c.with_sig(c.parts[3] + "="), M),
    case("signature-standard-base64-plus", lambda c: c.with_sig(c.parts[3][:20] + "+" + c.parts[3][21:]), M),
    case("signature-standard-base64-slash", lambda c: c.with_sig(c.parts[3][:20] + "/" + c.parts[3][21:]), M),
    case("whitespace-inside-signature", lambda c: c.with_sig(c.parts[3][:50] + " " + c.parts[3][50:]), M),
    case("whitespace-inside-header", lambda c: c.with_header(segment=c.parts[1][:10] + " " + c.parts[1][10:]), M),
    case("trailing-newline", lambda c: c.good.key + "\n", M),
    case("trailing-space", lambda c: c.good.key + " ", M),
    case("leading-space", lambda c: " " + c.good.key, M),
    case("header-padding-appended", lambda c: c.with_header(segment=c.parts[1] + "="), M),
    # --- structure -----------------------------------------------------------------
    case("non-json-header", lambda c: c.with_header(segment=b64(b"alg=RS256")), M),
    case("header-json-array", lambda c: c.with_header(segment=b64json([c.good_header()])), M),
    case("header-json-string", lambda c: c.with_header(segment=b64json("RS256")), M),
    case("header-json-null", lambda c: c.with_header(segment=b64(b"null")), M),
    case("header-not-utf8", lambda c: c.with_header(segment=b64(b'{"alg":"RS256","kid":"\xff"}')), M),
    case("header-duplicate-member-same-value",
         lambda c: _dup_header(c, '{"alg":"RS256","kid":"KID","typ":"JWT","kid":"KID"}'), M),
    case("header-duplicate-alg-none-then-rs256",
         lambda c: _dup_header(c, '{"alg":"none","alg":"RS256","kid":"KID","typ":"JWT"}'), M),
    case("header-nan", lambda c: _dup_header(c, '{"alg":"RS256","kid":"KID","typ":"JWT","x":NaN}'), M),
    case("header-trailing-garbage", lambda c: _dup_header(c, '{"alg":"RS256","kid":"KID","typ":"JWT"}x'), M),
    case("header-deeply-nested", lambda c: c.with_header(segment=b64(b"[" * 1200 + b"]" * 1200)), M),
    case("payload-json-array-signed", lambda c: c.rs.key(payload_segment=b64json([c.rs.claims()])), M),
    case("payload-not-json-signed", lambda c: c.rs.key(payload_segment=b64(b"Example of Ed25519 signing")), M),
    case("payload-duplicate-aud-signed",
         lambda c: c.rs.key(payload_segment=b64(
             json.dumps(c.rs.claims())[:-1].encode() + b',"aud":"other-api"}')), M),
    case("payload-exp-nan-signed",
         lambda c: c.rs.key(payload_segment=b64(json.dumps(c.rs.claims())[:-1].encode() + b',"exp":NaN}')), M),
    case("payload-exp-infinity-signed",
         lambda c: c.rs.key(payload_segment=b64(json.dumps(c.rs.claims())[:-1].encode() + b',"nbf":-Infinity}')), M),
    case("duplicate-dots", lambda c: c.good.key.replace(".", "..", 1), M),
    case("empty-payload", lambda c: f"{LIVE}{c.parts[1]}..{c.parts[3]}", M),
    case("two-parts", lambda c: f"{LIVE}{c.parts[1]}.{c.parts[2]}", M),
    case("one-part", lambda c: f"{LIVE}{c.parts[1]}", M),
    case("four-parts", lambda c: c.good.key + "." + c.parts[3], M),
    case("five-parts-jwe-shaped", lambda c: f"{LIVE}{c.parts[1]}.{c.parts[2]}.AAAA.{c.parts[2]}.{c.parts[3]}", M),
    case("bytes-instead-of-str", lambda c: c.good.key.encode("ascii"), M),
    case("none-instead-of-str", lambda c: None, M),
    case("int-instead-of-str", lambda c: 42, M),
    case("empty-string", lambda c: "", M),
    # --- prefix ----------------------------------------------------------------------
    case("wrong-prefix-pinned", lambda c: "sk_test_" + c.good.key[len(LIVE):], P, prefixes=["sk_live_"]),
    case("prefix-pinned-to-other-env", lambda c: c.good.key, P, prefixes=["sk_test_", "pk_live_"]),
    case("no-prefix", lambda c: c.good.key[len(LIVE):], M),
    case("no-prefix-pinned", lambda c: c.good.key[len(LIVE):], M, prefixes=["sk_live_"]),
    case("uppercase-prefix", lambda c: "SK_LIVE_" + c.good.key[len(LIVE):], M),
    case("prefix-without-underscore", lambda c: "sklive" + c.good.key[len(LIVE):], M),
    case("prefix-with-dash", lambda c: "sk-live-" + c.good.key[len(LIVE):], M),
    case("bearer-scheme-included", lambda c: "Bearer " + c.good.key, M),
    # --- headers that are never trusted (validly signed by the published key) --------------
    case("header-jku", lambda c: c.rs.key(c.rs.header(jku="https://evil.example/jwks.json")), H),
    case("header-x5u", lambda c: c.rs.key(c.rs.header(x5u="https://evil.example/cert.pem")), H),
    case("header-jwk", lambda c: c.rs.key(c.rs.header(jwk=c.rs.jwk)), H),
    case("header-x5c", lambda c: c.rs.key(c.rs.header(x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"])), H),
    case("header-crit", lambda c: c.rs.key(c.rs.header(crit=["exp"], exp=NOW + 10)), H),
    case("header-crit-empty", lambda c: c.rs.key(c.rs.header(crit=[])), H),
    case("header-b64-false", lambda c: c.rs.key(c.rs.header(b64=False, crit=["b64"])), H),
    case("header-b64-true", lambda c: c.rs.key(c.rs.header(b64=True)), H),
    # --- typ and claims (validly signed) ------------------------------------------------------
    case("typ-at+jwt", lambda c: c.rs.key(c.rs.header(typ="at+jwt")), C),
    case("typ-JOSE", lambda c: c.rs.key(c.rs.header(typ="JOSE")), C),
    case("typ-not-a-string", lambda c: c.rs.key(c.rs.header(typ=1)), C),
    case("jti-not-kid", lambda c: c.rs.key(claims=c.rs.claims(jti="another-key-id")), C),
    case("jti-of-another-published-key", lambda c: c.rs.key(claims=c.rs.claims(jti=c.good.kid)), C),
    case("jti-missing", lambda c: c.rs.key(claims=c.rs.claims(jti=DROP)), C),
    case("wrong-iss", lambda c: c.rs.key(claims=c.rs.claims(iss="https://auth.example/t/evil")), C),
    case("iss-missing", lambda c: c.rs.key(claims=c.rs.claims(iss=DROP)), C),
    case("iss-trailing-slash", lambda c: c.rs.key(claims=c.rs.claims(iss=ISSUER + "/")), C),
    case("wrong-aud", lambda c: c.rs.key(claims=c.rs.claims(aud="admin-api")), C),
    case("aud-missing", lambda c: c.rs.key(claims=c.rs.claims(aud=DROP)), C),
    case("aud-list-without-ours", lambda c: c.rs.key(claims=c.rs.claims(aud=["admin-api", "other"])), C),
    case("aud-empty-list", lambda c: c.rs.key(claims=c.rs.claims(aud=[])), C),
    case("aud-nested-list", lambda c: c.rs.key(claims=c.rs.claims(aud=[[AUDIENCE]])), C),
    case("aud-case-differs", lambda c: c.rs.key(claims=c.rs.claims(aud=AUDIENCE.upper())), C),
    case("expired", lambda c: c.rs.key(claims=c.rs.claims(exp=NOW - 3600)), E),
    case("expired-at-exactly-now", lambda c: c.rs.key(claims=c.rs.claims(exp=NOW)), E),
    case("expired-beyond-leeway", lambda c: c.rs.key(claims=c.rs.claims(exp=NOW - 30)), E, leeway=30),
    case("nbf-in-future", lambda c: c.rs.key(claims=c.rs.claims(nbf=NOW + 1)), Y),
    case("nbf-beyond-leeway", lambda c: c.rs.key(claims=c.rs.claims(nbf=NOW + 31)), Y, leeway=30),
    case("iat-in-future", lambda c: c.rs.key(claims=c.rs.claims(iat=NOW + 1)), Y),
    case("exp-as-string", lambda c: c.rs.key(claims=c.rs.claims(exp=str(NOW + 3600))), C),
    case("exp-as-bool", lambda c: c.rs.key(claims=c.rs.claims(exp=True)), C),
    case("exp-as-null", lambda c: c.rs.key(claims=c.rs.claims(exp=None)), C),
    case("nbf-as-string", lambda c: c.rs.key(claims=c.rs.claims(nbf="0")), C),
    case("iat-as-list", lambda c: c.rs.key(claims=c.rs.claims(iat=[NOW])), C),
    case("scope-not-a-string", lambda c: c.rs.key(claims=c.rs.claims(scope=["read", "write"])), C),
    # --- size ----------------------------------------------------------------------------------
    case("oversized-signed-token", _oversized_signed, T),
    case("oversized-garbage", lambda c: LIVE + "A" * 9000, T),
    case("just-over-custom-cap", lambda c: c.good.key, T, max_token_bytes=100),
]


def test_corpus_is_big_and_ids_are_unique():
    ids = [c.id for c in CORPUS]
    assert len(ids) == len(set(ids))
    assert len(CORPUS) >= 30
    for expected in ("unsupported_alg", "malformed", "bad_signature", "invalid_claims", "missing_kid",
                     "unknown_kid", "untrusted_header", "expired", "not_yet_valid", "too_large", "wrong_prefix"):
        assert any(c.code == expected for c in CORPUS), expected


@pytest.fixture(scope="module")
def ctx(good, rs_signer, es_signer, ed_signer) -> Ctx:
    return Ctx(good, rs_signer, es_signer, ed_signer)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_token_is_refused_with_the_right_error(case, ctx, make_verifier):
    token = case.build(ctx)
    verifier = make_verifier(**case.verifier)
    with pytest.raises(keys.KeyCoreError) as caught:
        verifier.verify(token)
    exc = caught.value
    assert type(exc) is case.error, f"{type(exc).__name__}({exc.code}) instead of {case.error.__name__}"
    assert exc.code == case.code
    # nothing about the token leaks into the error
    assert exc.__cause__ is None
    if isinstance(token, str) and len(token) > 40:
        assert token[len(LIVE):][-40:] not in str(exc)


CONTROLS = {
    "minted": lambda c: c.good.key,
    "rs-signer": lambda c: c.rs.key(),
    "es-signer": lambda c: c.es.key(),
    "ed-signer": lambda c: c.ed.key(),
}


@pytest.mark.parametrize("verifier_options", [{}, BOTH, RS_PS, ALL, {"leeway": 30}, {"prefixes": ["sk_live_"]}],
                         ids=["default", "rs+es", "rs+ps", "all", "leeway", "prefix-pinned"])
def test_corpus_controls_verify(verifier_options, ctx, make_verifier):
    """The unmodified bases pass every verifier configuration the corpus uses."""
    verifier = make_verifier(**verifier_options)
    pinned = set(verifier.algorithms)
    for name, build in CONTROLS.items():
        token = build(ctx)
        alg = decode_segment(split_key(token)[1])["alg"]
        if alg not in pinned:
            continue
        verified = verifier.verify(token)
        assert verified.prefix == LIVE and verified.algorithm == alg, name


@pytest.mark.parametrize("char", list(B64URL_ALPHABET))
def test_es256_signature_with_any_extra_character_is_refused(char, ctx, make_verifier):
    """Envoy accepted ES256 keys with one extra base64url character; we never do."""
    token = ctx.es.key() + char
    with pytest.raises(keys.KeyCoreError) as caught:
        make_verifier(**BOTH).verify(token)
    canonical = char in "AEIMQUYcgkosw048"  # no stray bits in an 87-character signature
    assert caught.value.code == ("bad_signature" if canonical else "malformed")


def test_revoked_key_is_unknown(ctx, keyset, make_verifier):
    other = keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="ES256", clock=lambda: NOW)
    local = keys.PublicKeySet([other.public_jwk])
    verifier = make_verifier(keys=local, algorithms=("ES256",))
    assert verifier.verify(other.key).kid == other.kid
    local.remove(other.kid)
    with pytest.raises(keys.UnknownKeyId):
        verifier.verify(other.key)
