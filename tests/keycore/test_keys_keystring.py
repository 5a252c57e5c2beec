"""The key string format ``<prefix><JWT>``: prefixes, parse/format, and the
secret-scanner regex."""

from __future__ import annotations

import json
import random

import pytest
from keys_support import AUDIENCE, B64URL_ALPHABET, ISSUER, NOW

import keys


@pytest.fixture(scope="module")
def sample():
    return keys.mint({"iss": ISSUER, "aud": AUDIENCE}, algorithm="EdDSA", clock=lambda: NOW)


GOOD_PREFIXES = [
    "sk_live_", "sk_test_", "pk_a1_b2_", "a_", "x1_", "sk_a_b_c_",
    "a" + "b" * 15 + "_",  # first group at its 16-character limit
    "sk_" + "c" * 16 + "_",  # later group at its 16-character limit
]
BAD_PREFIXES = [
    "", "SK_", "Sk_live_", "sk", "sk_live", "sk-live_", "_sk_", "1sk_", "sk__", "sk_live__",
    "sk live_", "sk_live_\n", "\nsk_live_", "sk_lïve_", "sk.live_",
    "a" + "b" * 16 + "_",  # first group too long
    "sk_" + "c" * 17 + "_",  # later group too long
    "sk_a_b_c_d_",  # five groups
]


@pytest.mark.parametrize("prefix", GOOD_PREFIXES)
def test_validate_prefix_accepts(prefix):
    assert keys.validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", BAD_PREFIXES, ids=[repr(p) for p in BAD_PREFIXES])
def test_validate_prefix_rejects(prefix):
    with pytest.raises(ValueError):
        keys.validate_prefix(prefix)


@pytest.mark.parametrize("prefix", [None, 7, b"sk_live_"])
def test_validate_prefix_rejects_non_strings(prefix):
    with pytest.raises(ValueError):
        keys.validate_prefix(prefix)


@pytest.mark.parametrize("prefix", GOOD_PREFIXES)
def test_format_parse_round_trip(prefix, sample):
    jwt = keys.parse_key_string(sample.key).jwt
    key = keys.format_key_string(prefix, jwt)
    assert key == prefix + jwt
    parsed = keys.parse_key_string(key)
    assert (parsed.prefix, parsed.jwt) == (prefix, jwt)
    assert keys.parse_key_string(key, [prefix, "other_"]).prefix == prefix
    assert keys.KEY_STRING_REGEX.fullmatch(key)


@pytest.mark.parametrize("prefix", BAD_PREFIXES[:6])
def test_format_refuses_bad_prefix(prefix, sample):
    with pytest.raises(ValueError):
        keys.format_key_string(prefix, keys.parse_key_string(sample.key).jwt)


def test_parse_with_pinned_prefixes(sample):
    with pytest.raises(keys.WrongPrefix) as exc:
        keys.parse_key_string(sample.key, ["sk_test_"])
    assert exc.value.code == "wrong_prefix"
    with pytest.raises(keys.WrongPrefix):
        keys.parse_key_string(sample.key, [])


@pytest.mark.parametrize("bad", [
    "", "eyJhbGciOiJFZERTQSJ9.e30.sig", "SK_LIVE_eyJhbGciOi", "sk_live_", "sk_live_nojwt",
    " sk_live_eyJhbGciOi", None, b"sk_live_eyJ", 42,
])
def test_parse_rejects(bad):
    with pytest.raises(keys.InvalidKeyString) as exc:
        keys.parse_key_string(bad)
    assert type(exc.value) is keys.InvalidKeyString and exc.value.code == "malformed"


def test_minted_prefix_property(sample):
    assert sample.prefix == "sk_live_"
    m = keys.mint({}, algorithm="EdDSA", prefix="pk_a1_b2_")
    assert m.prefix == "pk_a1_b2_" and m.key.startswith("pk_a1_b2_eyJ")


# --- scanner regex ---------------------------------------------------------------

EMBEDDINGS = {
    "sentence": "Oops, I pasted my key {key} into the chat.",
    "sentence-end": "my key is {key}",
    "json": json.dumps({"api_key": "{key}", "n": 1}),
    "env-file": "# prod\nAPI_KEY={key}\nOTHER=1\n",
    "env-quoted": "export API_KEY='{key}'",
    "yaml": "auth:\n  token: \"{key}\"\n",
    "header": "Authorization: Bearer {key}\r\n",
    "url-query": "https://api.example/v1?key={key}&x=1",
    "markdown": "use `{key}` here",
    "parenthesis": "(see {key})",
}


@pytest.mark.parametrize("where", list(EMBEDDINGS))
def test_regex_finds_a_key_in_free_text(where, sample):
    text = EMBEDDINGS[where].replace("{key}", sample.key)
    found = [m.group(0) for m in keys.KEY_STRING_REGEX.finditer(text)]
    assert found == [sample.key]
    match = keys.KEY_STRING_REGEX.search(text)
    assert match.group("prefix") == "sk_live_"
    assert match.group("jwt") == sample.key[len("sk_live_"):]


def test_regex_finds_every_key_in_a_text(sample):
    other = keys.mint({}, algorithm="ES256", prefix="sk_test_")
    text = f"a={sample.key},b={other.key}; c={sample.key}"
    assert [m.group(0) for m in keys.KEY_STRING_REGEX.finditer(text)] == [sample.key, other.key, sample.key]


def test_regex_does_not_match_random_text():
    rng = random.Random(1234)
    chunks = [
        "".join(rng.choice(B64URL_ALPHABET + " ._=\n") for _ in range(2000)),
        "sk_live_ " * 50,
        "The quick brown fox jumps over the lazy dog. sk_live_ is our prefix.",
        "sk_live_notajwt.notajwt.notajwt",
        "ghp_" + "".join(rng.choice(B64URL_ALPHABET) for _ in range(36)),
    ]
    for text in chunks:
        assert keys.KEY_STRING_REGEX.search(text) is None, text[:80]


def test_regex_needs_a_prefix(sample):
    jwt = sample.key[len("sk_live_"):]
    assert keys.KEY_STRING_REGEX.search(f"Authorization: Bearer {jwt}") is None


def test_regex_does_not_match_truncated_keys(sample):
    prefix = "sk_live_"
    h, p, s = sample.key[len(prefix):].split(".")
    for broken in (f"{prefix}{h}.{p}", f"{prefix}{h}", f"{prefix}{h}.{p}.{s[:10]}"):
        assert keys.KEY_STRING_REGEX.search(broken) is None
